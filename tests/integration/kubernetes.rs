//! `serve --runtime kubernetes` through the real binary against the fake API server
//! (tests/support/fake_kube): objects, readiness by watch, fast failures, faults, restarts,
//! deletes, warm pools, and the RBAC list checked against every request the binary sent.

use std::{
    path::PathBuf,
    process::Stdio,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use k8s_openapi::api::{
    batch::v1::Job,
    core::v1::{Pod, Secret, Service},
};
use mcp_ephemeral::runtime::kubernetes::rbac;
use rmcp::{ServiceExt, transport::TokioChildProcess};
use serde_json::{Value, json};

use crate::{
    fake_kube::{Delays, FakeConfig, FakeKube, Script},
    support::*,
};

const NS: &str = "mcp-test";
/// Each test here runs against the fake in seconds; a hang fails instead of stalling CI.
const KUBE_TEST_LIMIT: Duration = Duration::from_secs(90);
const SECRET: &str = "s3cr3t-value-42";

/// A fake cluster and a kubeconfig pointing at it.
pub(crate) struct Cluster {
    pub(crate) fake: FakeKube,
    pub(crate) kubeconfig: PathBuf,
    /// (group, resource, verb) the test itself uses (e.g. `kubectl apply` of a resource): the
    /// RBAC check leaves those out, the meta server's own requests stay checked.
    test_access: Mutex<Vec<(String, String, String)>>,
    _dir: TempDir,
}

impl Cluster {
    /// Let the test itself send `verb` on `group`/`resource` (the meta server may not).
    pub(crate) fn allow_test_access(&self, group: &str, resource: &str, verb: &str) {
        self.test_access.lock().unwrap().push((group.into(), resource.into(), verb.into()));
    }
}

pub(crate) async fn cluster(config: FakeConfig) -> Cluster {
    let fake = FakeKube::start(config).await;
    let dir = TempDir::new();
    let kubeconfig = fake.write_kubeconfig(&dir.0, NS);
    Cluster { fake, kubeconfig, test_access: Mutex::default(), _dir: dir }
}

/// Every test against the fake ends with the RBAC cross-check: each request the meta server sent
/// is one the Role in deploy/kubernetes allows (checked when the cluster goes, unless the test
/// already failed).
impl Drop for Cluster {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let test_access = self.test_access.lock().unwrap().clone();
            assert_requests_within_rbac(&self.fake, &test_access);
        }
    }
}

/// A directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        let path = std::env::temp_dir().join(format!("mcp-ephemeral-kube-{}", rand_suffix()));
        std::fs::create_dir_all(&path).expect("temp dir");
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn rand_suffix() -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    format!("{}-{nanos}", std::process::id())
}

/// The meta server on stdio with `--runtime kubernetes`; its stderr lines are kept.
pub(crate) struct KubeMeta {
    pub(crate) client: Client,
    pub(crate) logs: Arc<Mutex<Vec<String>>>,
}

async fn kube_meta(c: &Cluster, extra: &[&str]) -> KubeMeta {
    kube_meta_with_env(c, extra, &[]).await
}

/// The meta server on stdio with `--runtime kubernetes` against `c`, with `env` added; its
/// stderr lines are echoed and kept.
pub(crate) async fn kube_meta_with_env(c: &Cluster, extra: &[&str], env: &[(&str, &str)]) -> KubeMeta {
    let mut cmd = tokio::process::Command::new(BIN);
    cmd.args(["serve", "--runtime", "kubernetes"]);
    if !extra.contains(&"--ready-timeout") {
        cmd.args(["--ready-timeout", "30s"]);
    }
    cmd.args(extra).env("KUBECONFIG", &c.kubeconfig).env_remove("KUBERNETES_SERVICE_HOST").envs(env.iter().copied());
    let (client, logs) = meta_stdio_kept(cmd, "meta-kube").await;
    KubeMeta { client, logs }
}

/// The name a create first tried and found taken (409), as the meta server logged it.
fn taken_name(meta: &KubeMeta) -> String {
    meta.logs
        .lock()
        .unwrap()
        .iter()
        .find_map(|l| l.split("taken=").nth(1).and_then(|rest| rest.split_whitespace().next()).map(str::to_string))
        .expect("the 409 and the name it hit are logged")
}

/// No Job, Service or Secret of server `job` is left in the fake.
fn nothing_left(f: &FakeKube, job: &str) -> bool {
    f.object::<Job>(NS, job).is_none()
        && f.object::<Service>(NS, job).is_none()
        && f.object::<Secret>(NS, &format!("{job}-env")).is_none()
}

/// The serialized objects with the generated name and times replaced, for snapshots.
fn normalized(v: &impl serde::Serialize, job: &str) -> String {
    // The Job controller's labels carry the Job's random uid.
    let mut text: String = serde_saphyr::to_string(v)
        .expect("yaml")
        .replace(job, "JOB")
        .lines()
        .filter(|l| !l.contains("controller-uid"))
        .collect::<Vec<_>>()
        .join("\n");
    for key in ["mcp-ephemeral.dev/created-at", "mcp-ephemeral.dev/expires-at"] {
        let lines: Vec<String> = text
            .lines()
            .map(|l| match l.find(key) {
                Some(at) => format!("{}{key}: TIME", &l[..at]),
                None => l.into(),
            })
            .collect();
        text = lines.join("\n");
    }
    text
}

/// What the runtime made, as stored by the API server, minus server-set fields.
fn made_objects(fake: &FakeKube, job: &str) -> (Job, Option<Service>, Option<Secret>, Vec<Pod>) {
    let j: Job = fake.object(NS, job).expect("job in the fake");
    let svc: Option<Service> = fake.object(NS, job);
    let secret: Option<Secret> = fake.object(NS, &format!("{job}-env"));
    let pods: Vec<Pod> = fake
        .objects::<Pod>(NS)
        .into_iter()
        .filter(|p| {
            p.metadata.labels.as_ref().and_then(|l| l.get("app.kubernetes.io/instance")).map(String::as_str)
                == Some(job)
        })
        .collect();
    (j, svc, secret, pods)
}

fn assert_requests_within_rbac(fake: &FakeKube, test_access: &[(String, String, String)]) {
    let requests = fake.requests();
    assert!(!requests.is_empty());
    let the_tests = |r: &&crate::fake_kube::RequestRecord| {
        test_access.iter().any(|(g, res, v)| *g == r.group && *res == r.resource && *v == r.verb)
    };
    for r in requests.iter().filter(|r| !r.resource.is_empty() && r.resource != "namespaces" && !the_tests(r)) {
        assert!(
            rbac::allows(&r.group, &r.resource, &r.verb),
            "{} {} {:?} is not in runtime::kubernetes::rbac::API_ACCESS (and so not in the Role)",
            r.verb,
            r.resource,
            r.path
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_waits_for_ready_and_makes_the_expected_objects_without_leaking_the_secret() {
    within(KUBE_TEST_LIMIT, async {
        let c = cluster(FakeConfig::new(NS)).await;
        let meta = kube_meta(&c, &[]).await;
        let version = call_ok(&meta.client, "get_version", json!({})).await;
        assert_eq!((version["runtime"].as_str(), version["namespace"].as_str()), (Some("kubernetes"), Some(NS)));

        let created = call(
            &meta.client,
            "create_mcp_server",
            json!({"preset": "time", "env": {"PLAIN": "1"}, "secret_env": {"API_KEY": SECRET},
                   "labels": {"team": "blue"}, "wait_for_ready": true}),
        )
        .await;
        assert_ne!(created.is_error, Some(true), "{}", text(&created));
        let server = created.structured_content.clone().expect("structured");
        assert_eq!(server["phase"], "Ready", "{server}");
        let job = server["job_name"].as_str().unwrap().to_string();
        assert!(job.starts_with("time-"));
        let mcp = server["urls"]["mcp"].as_str().unwrap();
        assert!(mcp.starts_with("http://127.0.0.1:") && mcp.contains(&format!("/servers/{job}/")), "{mcp}");
        let token = mcp.trim_end_matches("/mcp").rsplit('/').next().unwrap();
        assert_eq!(token.len(), 22, "the capability token is the segment before mcp: {mcp}");
        assert_eq!(server["secret_env_names"], json!(["API_KEY"]));

        let (j, svc, secret, pods) = made_objects(&c.fake, &job);
        let uid = j.metadata.uid.clone().unwrap();
        let owned = |refs: &Option<Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference>>| {
            refs.as_ref().is_some_and(|r| r.iter().any(|o| o.uid == uid && o.kind == "Job"))
        };
        let svc = svc.expect("service");
        let secret = secret.expect("secret");
        assert!(owned(&svc.metadata.owner_references), "the Service is owned by the Job");
        assert!(owned(&secret.metadata.owner_references), "the Secret is owned by the Job");
        assert_eq!(secret.data.as_ref().unwrap()["API_KEY"].0, SECRET.as_bytes());
        assert_eq!(pods.len(), 1);
        let spec = j.spec.clone().unwrap();
        insta::assert_snapshot!("fake_job_pod_template", normalized(&spec.template, &job));
        insta::assert_snapshot!(
            "fake_job_metadata_labels_annotations",
            normalized(&(&j.metadata.labels, &j.metadata.annotations), &job)
        );
        assert_eq!((spec.backoff_limit, spec.active_deadline_seconds), (Some(0), Some(3600)));

        // The secret value is nowhere but in the Secret.
        let status = call(&meta.client, "get_mcp_server_status", json!({"job_name": job})).await;
        let listed = call(&meta.client, "list_mcp_servers", json!({})).await;
        let logs = call(&meta.client, "get_mcp_server_logs", json!({"job_name": job})).await;
        assert!(text(&logs).contains("listening"), "{}", text(&logs));
        let status_json = status.structured_content.clone().expect("structured status");
        assert_eq!(
            (status_json["job_name"].as_str(), status_json["phase"].as_str()),
            (Some(job.as_str()), Some("Ready"))
        );
        assert_eq!(status_json["secret_env_names"], json!(["API_KEY"]));
        let listed_json = listed.structured_content.clone().expect("structured list");
        let names: Vec<&str> =
            listed_json["servers"].as_array().unwrap().iter().filter_map(|s| s["job_name"].as_str()).collect();
        assert_eq!(names, [job.as_str()], "{listed_json}");
        for out in [format!("{created:?}"), format!("{status:?}"), format!("{listed:?}"), format!("{logs:?}")] {
            assert!(!out.contains(SECRET), "a secret value leaked into a tool result");
        }
        assert!(!serde_json::to_string(&j).unwrap().contains(SECRET), "a secret value leaked into the Job");
        assert!(!meta.logs.lock().unwrap().iter().any(|l| l.contains(SECRET)), "a secret value leaked into the logs");

        let deleted =
            call_ok(&meta.client, "delete_mcp_server", json!({"job_name": job, "wait_for_deletion": true})).await;
        assert_eq!(deleted["phase"], "Deleted", "{deleted}");
        assert_requests_within_rbac(&c.fake, &[]);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_reaches_clients_that_asked_for_it() {
    within(KUBE_TEST_LIMIT, async {
        let delays =
            Delays { start: Duration::from_millis(300), ready: Duration::from_millis(300), ..Delays::default() };
        let c = cluster(FakeConfig::new(NS).delays(delays)).await;
        let meta = kube_meta(&c, &[]).await;
        let token = rmcp::model::ProgressToken(rmcp::model::NumberOrString::String("p1".into()));
        let mut params = rmcp::model::CallToolRequestParams::new("create_mcp_server")
            .with_arguments(json!({"preset": "time", "wait_for_ready": true}).as_object().unwrap().clone());
        params.meta = Some(rmcp::model::RequestMetaObject::with_progress_token(token));
        let res =
            tokio::time::timeout(TEST_LIMIT, meta.client.call_tool(params)).await.expect("in time").expect("create");
        assert_ne!(res.is_error, Some(true), "{}", text(&res));
        // Notifications may be handled after the response: wait for the last one.
        let progress = meta.client.service().wait_for_progress("ready").await;
        assert!(progress.iter().any(|m| m.contains("scheduled")), "{progress:?}");
        assert!(progress.iter().any(|m| m.contains("ready")), "{progress:?}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_pull_failures_and_crashes_fail_fast_with_the_reason() {
    within(KUBE_TEST_LIMIT, async {
        let config = FakeConfig::new(NS)
            .rule("pull-fail", Script::ImagePullFailure)
            .rule("crashing-server", Script::Crash { exit_code: 3, logs: vec!["boom: TOKEN is not set".into()] })
            .rule("loop-server", Script::CrashLoop { exit_code: 1, logs: vec!["again".into()] });
        let c = cluster(config).await;
        let meta = kube_meta(&c, &[]).await;

        let started = Instant::now();
        let err = call_err(
            &meta.client,
            "create_mcp_server",
            json!({"image": "registry.example/pull-fail:1", "image_transport": "http", "wait_for_ready": true}),
        )
        .await;
        assert!(err.contains("ErrImagePull") || err.contains("ImagePullBackOff"), "{err}");
        assert!(err.contains("Recent events"), "the pod's events are in the message: {err}");
        assert!(started.elapsed() < Duration::from_secs(15), "failed fast, not after the 30 s timeout");

        let err = call_err(
            &meta.client,
            "create_mcp_server",
            json!({"runtime_exec": "crashing-server", "wait_for_ready": true}),
        )
        .await;
        assert!(err.contains("failed (Error)") && err.contains("exited with code 3"), "{err}");
        assert!(err.contains("boom: TOKEN is not set"), "the log tail is in the message: {err}");
        let job = err.split('`').nth(1).expect("the message names the server").to_string();
        let status = call_ok(&meta.client, "get_mcp_server_status", json!({"job_name": job})).await;
        assert_eq!(status["phase"], "Failed", "{status}");
        assert_eq!(status["exit_code"], 3, "{status}");

        let err =
            call_err(&meta.client, "create_mcp_server", json!({"runtime_exec": "loop-server", "wait_for_ready": true}))
                .await;
        assert!(err.contains("CrashLoopBackOff"), "{err}");

        let err = call_err(&meta.client, "create_mcp_server", json!({"image": "registry.example/stdio:1"})).await;
        assert!(err.contains("runtime_args"), "a stdio image needs its command: {err}");
        assert!(started.elapsed() < Duration::from_secs(40));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_watch_is_resumed_and_api_errors_are_retried_then_reported() {
    within(KUBE_TEST_LIMIT, async {
        let delays = Delays { ready: Duration::from_millis(1500), ..Delays::default() };
        let c = cluster(FakeConfig::new(NS).delays(delays)).await;
        let meta = kube_meta(&c, &[]).await;
        let faults = c.fake.faults();
        let dropper = tokio::spawn(async move {
            for _ in 0..3 {
                tokio::time::sleep(Duration::from_millis(300)).await;
                faults.drop_watches();
            }
        });
        c.fake.faults().fail_next("list", "pods", 2);
        let server =
            call_ok(&meta.client, "create_mcp_server", json!({"preset": "time", "wait_for_ready": true})).await;
        assert_eq!(server["phase"], "Ready", "{server}");
        dropper.await.unwrap();

        // Slow answers are waited for (each request is bounded at 15 s).
        c.fake.faults().delay("get", "jobs", Duration::from_millis(700));
        let status = call_ok(&meta.client, "get_mcp_server_status", json!({"job_name": server["job_name"]})).await;
        assert_eq!(status["phase"], "Ready", "{status}");
        c.fake.faults().clear();

        // A few 500s are retried without the caller noticing.
        c.fake.faults().fail_next("create", "jobs", 2);
        let server = call_ok(&meta.client, "create_mcp_server", json!({"preset": "time"})).await;
        assert_eq!(server["phase"], "Pending", "{server}");

        // A name taken in the cluster (409) gets a fresh name.
        c.fake.faults().conflict_next_create("jobs");
        let server = call_ok(&meta.client, "create_mcp_server", json!({"preset": "time"})).await;
        let job = server["job_name"].as_str().unwrap();
        assert!(job.starts_with("time-"), "{job}");
        let taken = taken_name(&meta);
        assert_ne!(taken, job, "a fresh name, not a retry of the taken one");
        assert!(c.fake.object::<Job>(NS, job).is_some() && c.fake.object::<Job>(NS, &taken).is_none());

        // An API server that keeps failing is reported, with the status, after a bounded wait.
        c.fake.faults().fail_for("create", "jobs", Duration::from_secs(30));
        let started = Instant::now();
        let err = call_err(&meta.client, "create_mcp_server", json!({"preset": "time"})).await;
        assert!(err.contains("Kubernetes API error while creating server") && err.contains("500"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(10), "retries are bounded");
        c.fake.faults().clear();
        // Nothing of the failed create is left behind.
        let list = call_ok(&meta.client, "list_mcp_servers", json!({})).await;
        assert_eq!(list["servers"].as_array().unwrap().len(), 3, "{list}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_whose_name_was_taken_is_ready_and_managed_under_its_new_name() {
    within(KUBE_TEST_LIMIT, async {
        let c = cluster(FakeConfig::new(NS)).await;
        let meta = kube_meta(&c, &[]).await;
        c.fake.faults().conflict_next_create("jobs");
        let server = call_ok(
            &meta.client,
            "create_mcp_server",
            json!({"preset": "time", "secret_env": {"K": SECRET}, "wait_for_ready": true}),
        )
        .await;
        assert_eq!(server["phase"], "Ready", "waited under the name the server got: {server}");
        let job = server["job_name"].as_str().unwrap().to_string();
        // The name tried first, as the meta server logged it.
        let taken = taken_name(&meta);
        assert_ne!(taken, job, "a fresh name was picked");

        let status = call_ok(&meta.client, "get_mcp_server_status", json!({"job_name": job})).await;
        assert_eq!((status["job_name"].as_str(), status["phase"].as_str()), (Some(job.as_str()), Some("Ready")));
        let list = call_ok(&meta.client, "list_mcp_servers", json!({})).await;
        let names: Vec<&str> =
            list["servers"].as_array().unwrap().iter().filter_map(|s| s["job_name"].as_str()).collect();
        assert_eq!(names, [job.as_str()], "{list}");
        let old = call_err(&meta.client, "get_mcp_server_status", json!({"job_name": taken})).await;
        assert!(old.contains("no MCP server named"), "{old}");
        assert!(c.fake.object::<Job>(NS, &taken).is_none(), "no Job under the taken name");
        assert!(c.fake.object::<Service>(NS, &taken).is_none(), "no Service under the taken name");
        assert!(c.fake.object::<Secret>(NS, &format!("{taken}-env")).is_none(), "no Secret under the taken name");

        let deleted =
            call_ok(&meta.client, "delete_mcp_server", json!({"job_name": job, "wait_for_deletion": true})).await;
        assert_eq!((deleted["phase"].as_str(), deleted["already_gone"].as_bool()), (Some("Deleted"), Some(false)));
        let gone = c.fake.wait_until(Duration::from_secs(5), |f| nothing_left(f, &job)).await;
        assert!(gone, "everything of the server is gone");
        assert_requests_within_rbac(&c.fake, &[]);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_stored_but_answered_with_an_error_or_a_dropped_connection_leaves_one_copy_and_no_orphan() {
    within(KUBE_TEST_LIMIT, async {
        let c = cluster(FakeConfig::new(NS)).await;
        let meta = kube_meta(&c, &[]).await;
        let counts =
            |f: &FakeKube| (f.objects::<Job>(NS).len(), f.objects::<Service>(NS).len(), f.objects::<Secret>(NS).len());
        let mut made = Vec::new();
        for lost in ["500", "dropped connection"] {
            for resource in ["secrets", "jobs", "services"] {
                let before = counts(&c.fake);
                match lost {
                    "500" => c.fake.faults().fail_next_after_write("create", resource, 1),
                    _ => c.fake.faults().drop_next_after_write("create", resource, 1),
                }
                let server = call_ok(
                    &meta.client,
                    "create_mcp_server",
                    json!({"preset": "time", "secret_env": {"K": SECRET}, "wait_for_ready": true}),
                )
                .await;
                assert_eq!(server["phase"], "Ready", "{lost} after the {resource} create: {server}");
                let job = server["job_name"].as_str().unwrap().to_string();
                let (j, svc, secret, _) = made_objects(&c.fake, &job);
                assert!(svc.is_some() && secret.is_some(), "{lost} after the {resource} create: the server is whole");
                let uid = j.metadata.uid.clone().unwrap();
                let owners = secret.unwrap().metadata.owner_references.unwrap_or_default();
                assert!(owners.iter().any(|o| o.uid == uid), "the Secret is owned by the Job");
                let after = counts(&c.fake);
                assert_eq!(
                    after,
                    (before.0 + 1, before.1 + 1, before.2 + 1),
                    "{lost} after the {resource} create: exactly one Job, Service and Secret more, no copy, no orphan"
                );
                made.push(job);
            }
        }
        let list = call_ok(&meta.client, "list_mcp_servers", json!({})).await;
        let mut names: Vec<String> = list["servers"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|s| s["job_name"].as_str().map(str::to_string))
            .collect();
        names.sort();
        made.sort();
        assert_eq!(names, made, "every server listed once, nothing else");
        assert_requests_within_rbac(&c.fake, &[]);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_never_becomes_ready_fails_the_wait_at_the_ready_timeout_with_its_phase() {
    within(KUBE_TEST_LIMIT, async {
        let c = cluster(FakeConfig::new(NS).rule("never-ready", Script::NeverReady)).await;
        let meta = kube_meta(&c, &["--ready-timeout", "2s"]).await;
        let started = Instant::now();
        let err =
            call_err(&meta.client, "create_mcp_server", json!({"runtime_exec": "never-ready", "wait_for_ready": true}))
                .await;
        assert!(err.contains("is not ready after 2s") && err.contains("phase Starting"), "{err}");
        let waited = started.elapsed();
        assert!(waited >= Duration::from_secs(2) && waited < Duration::from_secs(10), "waited {waited:?}");
        let job = err.split('`').nth(1).expect("the message names the server").to_string();
        let status = call_ok(&meta.client, "get_mcp_server_status", json!({"job_name": job})).await;
        assert_eq!(
            (status["phase"].as_str(), status["reason"].as_str()),
            (Some("Starting"), Some("WaitingForInitialize"))
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ttl_reaper_deletes_an_expired_kubernetes_server_with_its_objects() {
    within(KUBE_TEST_LIMIT, async {
        let c = cluster(FakeConfig::new(NS)).await;
        let meta = kube_meta(&c, &[]).await;
        let server = call_ok(
            &meta.client,
            "create_mcp_server",
            json!({"preset": "time", "secret_env": {"K": SECRET}, "ttl_seconds": 2, "wait_for_ready": true}),
        )
        .await;
        let job = server["job_name"].as_str().unwrap().to_string();
        let long = call_ok(&meta.client, "create_mcp_server", json!({"preset": "time", "ttl_seconds": 600})).await;
        let gone = c.fake.wait_until(Duration::from_secs(10), |f| nothing_left(f, &job)).await;
        assert!(gone, "the expired server's Job, Service and Secret are deleted");
        let list = call_ok(&meta.client, "list_mcp_servers", json!({})).await;
        let names: Vec<&str> =
            list["servers"].as_array().unwrap().iter().filter_map(|s| s["job_name"].as_str()).collect();
        assert_eq!(names, [long["job_name"].as_str().unwrap()], "the server with time left stays: {list}");
        assert!(meta.logs.lock().unwrap().iter().any(|l| l.contains("TTL expired; deleting") && l.contains(&job)));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_sweeps_orphaned_secrets_services_and_old_pool_members_and_keeps_young_ones() {
    within(KUBE_TEST_LIMIT, async {
        let c = cluster(FakeConfig::new(NS)).await;
        let labels = |instance: &str| json!({"app.kubernetes.io/managed-by": "mcp-ephemeral", "app.kubernetes.io/instance": instance});
        let old = humantime::format_rfc3339_seconds(std::time::SystemTime::now() - Duration::from_secs(600)).to_string();
        for (resource, name, instance) in
            [("secrets", "ghost-00000001-env", "ghost-00000001"), ("services", "ghost-00000001", "ghost-00000001")]
        {
            let mut obj = json!({"metadata": {"name": name, "namespace": NS, "labels": labels(instance)}});
            if resource == "services" {
                obj["spec"] = json!({"ports": [{"port": 8080}]});
            }
            c.fake.insert_json(resource, NS, obj);
            c.fake.update_json(resource, NS, name, |o| o["metadata"]["creationTimestamp"] = json!(old));
        }
        // A create in progress of another meta server: young, so kept.
        c.fake.insert_json(
            "secrets",
            NS,
            json!({"metadata": {"name": "young-00000002-env", "namespace": NS, "labels": labels("young-00000002")}}),
        );
        // A warm-pool member of a previous run: nobody will hand it out.
        let mut pool_labels = labels("time-00000003");
        pool_labels["mcp-ephemeral.dev/pool"] = json!("time");
        c.fake.insert_json(
            "jobs",
            NS,
            json!({"metadata": {"name": "time-00000003", "namespace": NS, "labels": pool_labels},
                   "spec": {"template": {"spec": {"containers": [{"name": "mcp", "image": "x"}], "restartPolicy": "Never"}}}}),
        );
        c.fake.update_json("jobs", NS, "time-00000003", |o| o["metadata"]["creationTimestamp"] = json!(old));

        let _meta = kube_meta(&c, &[]).await;
        let swept = c
            .fake
            .wait_until(Duration::from_secs(10), |f| {
                f.object::<Secret>(NS, "ghost-00000001-env").is_none()
                    && f.object::<Service>(NS, "ghost-00000001").is_none()
                    && f.object::<Job>(NS, "time-00000003").is_none()
            })
            .await;
        assert!(swept, "the orphaned Secret and Service and the old pool member are deleted");
        assert!(c.fake.object::<Secret>(NS, "young-00000002-env").is_some(), "a young Secret may be a create in progress");
        assert_requests_within_rbac(&c.fake, &[]);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_that_end_with_an_error_event_or_410_gone_are_resumed_and_the_wait_succeeds() {
    within(KUBE_TEST_LIMIT, async {
        let delays = Delays { ready: Duration::from_millis(2000), ..Delays::default() };
        let c = cluster(FakeConfig::new(NS).delays(delays)).await;
        let meta = kube_meta(&c, &[]).await;
        let breaker = async {
            for round in 0..4 {
                tokio::time::sleep(Duration::from_millis(350)).await;
                if round % 2 == 0 {
                    c.fake.faults().error_watches(500);
                } else {
                    // The history is gone: a resumed watch gets 410 and must list again.
                    c.fake.compact();
                    c.fake.faults().error_watches(410);
                }
            }
        };
        let create = call_ok(&meta.client, "create_mcp_server", json!({"preset": "time", "wait_for_ready": true}));
        let (server, ()) = tokio::join!(create, breaker);
        assert_eq!(server["phase"], "Ready", "{server}");
        let watches = c.fake.requests().iter().filter(|r| r.verb == "watch" && r.resource == "pods").count();
        assert!(watches >= 3, "the pod watch was resumed after each error ({watches} watch requests)");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_server_that_keeps_failing_during_the_wait_fails_it_after_a_bounded_number_of_errors() {
    within(KUBE_TEST_LIMIT, async {
        let delays = Delays { start: Duration::from_secs(20), ..Delays::default() };
        let c = cluster(FakeConfig::new(NS).delays(delays)).await;
        let meta = kube_meta(&c, &[]).await;
        // From the moment the Job exists (after the quota check and the creates), every pod list
        // and watch fails.
        let injector = async {
            c.fake.wait_until(Duration::from_secs(10), |f| !f.objects::<Job>(NS).is_empty()).await;
            let faults = c.fake.faults();
            faults.fail_for("list", "pods", Duration::from_secs(30));
            faults.fail_for("watch", "pods", Duration::from_secs(30));
            faults.error_watches(500);
        };
        let started = Instant::now();
        let create = call_err(&meta.client, "create_mcp_server", json!({"preset": "time", "wait_for_ready": true}));
        let (err, ()) = tokio::join!(create, injector);
        assert!(err.contains("keeps failing") && err.contains("errors in a row"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(20), "bounded: {:?}", started.elapsed());
        c.fake.faults().clear();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_with_wait_returns_once_the_pods_are_gone_and_without_wait_says_terminating() {
    within(KUBE_TEST_LIMIT, async {
        let delays = Delays { pod_grace: Duration::from_millis(800), ..Delays::default() };
        let c = cluster(FakeConfig::new(NS).delays(delays)).await;
        let meta = kube_meta(&c, &[]).await;
        let pods_of = |f: &FakeKube, job: &str| {
            f.objects::<Pod>(NS)
                .iter()
                .filter(|p| {
                    p.metadata.labels.as_ref().and_then(|l| l.get("app.kubernetes.io/instance")).map(String::as_str)
                        == Some(job)
                })
                .count()
        };
        let a = call_ok(&meta.client, "create_mcp_server", json!({"preset": "time", "wait_for_ready": true})).await;
        let a = a["job_name"].as_str().unwrap().to_string();
        assert_eq!(pods_of(&c.fake, &a), 1);
        let deleted =
            call_ok(&meta.client, "delete_mcp_server", json!({"job_name": a, "wait_for_deletion": true})).await;
        assert_eq!(deleted["phase"], "Deleted", "{deleted}");
        assert_eq!(pods_of(&c.fake, &a), 0, "waited until the pod was gone");

        let b = call_ok(&meta.client, "create_mcp_server", json!({"preset": "time", "wait_for_ready": true})).await;
        let b = b["job_name"].as_str().unwrap().to_string();
        let deleted =
            call_ok(&meta.client, "delete_mcp_server", json!({"job_name": b, "wait_for_deletion": false})).await;
        assert_eq!((deleted["phase"].as_str(), deleted["already_gone"].as_bool()), (Some("Terminating"), Some(false)));
        assert!(c.fake.object::<Job>(NS, &b).is_none(), "the Job is deleted at once");
        let gone = c.fake.wait_until(Duration::from_secs(5), |f| pods_of(f, &b) == 0).await;
        assert!(gone, "and its pod goes after its grace period");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_meta_server_lists_and_deletes_what_the_last_one_made() {
    within(KUBE_TEST_LIMIT, async {
        let c = cluster(FakeConfig::new(NS)).await;
        let first = kube_meta(&c, &[]).await;
        let a = call_ok(
            &first.client,
            "create_mcp_server",
            json!({"preset": "time", "secret_env": {"K": SECRET}, "labels": {"run": "one"}}),
        )
        .await;
        let b = call_ok(&first.client, "create_mcp_server", json!({"preset": "everything"})).await;
        first.client.cancel().await.expect("stop the first meta server");

        let second = kube_meta(&c, &[]).await;
        let list = call_ok(&second.client, "list_mcp_servers", json!({})).await;
        let names: Vec<&str> =
            list["servers"].as_array().unwrap().iter().filter_map(|s| s["job_name"].as_str()).collect();
        for s in [&a, &b] {
            assert!(names.contains(&s["job_name"].as_str().unwrap()), "{names:?}");
        }
        let selected = call_ok(&second.client, "list_mcp_servers", json!({"label_selector": "run=one"})).await;
        assert_eq!(selected["servers"].as_array().unwrap().len(), 1, "{selected}");

        let job = a["job_name"].as_str().unwrap();
        let deleted =
            call_ok(&second.client, "delete_mcp_server", json!({"job_name": job, "wait_for_deletion": true})).await;
        assert_eq!(deleted["phase"], "Deleted", "{deleted}");
        assert_eq!(deleted["already_gone"], false);
        let gone = c
            .fake
            .wait_until(Duration::from_secs(5), |f| {
                nothing_left(f, job)
                    && !f
                        .objects::<Pod>(NS)
                        .iter()
                        .any(|p| p.metadata.name.as_deref().is_some_and(|n| n.starts_with(job)))
            })
            .await;
        assert!(gone, "Job, Service, Secret and pods are gone");
        let again = call_ok(&second.client, "delete_mcp_server", json!({"job_name": job})).await;
        assert_eq!(again["already_gone"], true, "{again}");
        let status = call_err(&second.client, "get_mcp_server_status", json!({"job_name": job})).await;
        assert!(status.contains("list_mcp_servers"), "{status}");
        assert_requests_within_rbac(&c.fake, &[]);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warm_pool_member_is_handed_out_once_with_the_callers_labels() {
    within(KUBE_TEST_LIMIT, async {
        let c = cluster(FakeConfig::new(NS)).await;
        let meta = kube_meta(&c, &["--warm-pool", "time=1"]).await;
        let mut ready = false;
        for _ in 0..100 {
            let v = call_ok(&meta.client, "get_version", json!({})).await;
            if v["pools"][0]["ready"] == 1 {
                ready = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(ready, "the pool fills");
        let list = call_ok(&meta.client, "list_mcp_servers", json!({})).await;
        assert_eq!(list["servers"].as_array().unwrap().len(), 0, "pool members are nobody's servers: {list}");
        let member: Vec<Job> = c.fake.objects::<Job>(NS);
        assert_eq!(member.len(), 1);
        let member = member[0].metadata.name.clone().unwrap();

        let server = call_ok(
            &meta.client,
            "create_mcp_server",
            json!({"preset": "time", "labels": {"team": "blue"}, "ttl_seconds": 120, "wait_for_ready": true}),
        )
        .await;
        assert_eq!(server["phase"], "Ready");
        assert_eq!(server["job_name"], member.as_str(), "the member was handed out");
        // It has a capability token of its own, in its Secret, like any server.
        let url = server["urls"]["mcp"].as_str().unwrap();
        let token = url.trim_end_matches("/mcp").rsplit('/').next().unwrap();
        assert_eq!(token.len(), 22, "a handed-out member's URL carries a token: {url}");
        let secret: Secret = c.fake.object(NS, &format!("{member}-env")).expect("the member's Secret");
        assert_eq!(secret.data.unwrap()["MCP_EPHEMERAL_SERVER_TOKEN"].0, token.as_bytes());
        let job: Job = c.fake.object(NS, &member).unwrap();
        let labels = job.metadata.labels.clone().unwrap();
        assert_eq!(labels.get("team").map(String::as_str), Some("blue"));
        assert!(!labels.contains_key("mcp-ephemeral.dev/pool"));
        assert!(job.spec.unwrap().active_deadline_seconds.unwrap() <= 130);
        let list = call_ok(&meta.client, "list_mcp_servers", json!({})).await;
        assert_eq!(list["servers"].as_array().unwrap().len(), 1, "{list}");
        let refilled = c.fake.wait_until(Duration::from_secs(10), |f| f.objects::<Job>(NS).len() == 2).await;
        assert!(refilled, "a replacement member starts");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_http_the_gateway_is_on_the_meta_servers_listener() {
    within(KUBE_TEST_LIMIT, async {
        let c = cluster(FakeConfig::new(NS)).await;
        let kubeconfig = c.kubeconfig.to_string_lossy().to_string();
        let meta = HttpMeta::start_with_env(&["--runtime", "kubernetes"], &[("KUBECONFIG", &kubeconfig)]).await;
        let client = connect_http(&format!("{}/mcp", meta.base)).await;
        let server = call_ok(&client, "create_mcp_server", json!({"preset": "time", "wait_for_ready": true})).await;
        let url = server["urls"]["mcp"].as_str().unwrap();
        assert!(url.starts_with(&format!("{}/servers/", meta.base)), "{url} is on {}", meta.base);
        // The fake cannot port-forward: the gateway says so instead of hanging.
        let resp = reqwest::Client::new()
            .post(url)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .body(r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 502);
        assert!(resp.text().await.unwrap().contains("cannot open a tunnel"));
        let resp = reqwest::get(format!("{}/servers/nope-00000000/mcp", meta.base)).await.unwrap();
        assert_eq!(resp.status(), 404);
        assert!(c.fake.requests().iter().any(|r| r.resource == "pods/portforward"));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_problems_are_one_clear_line() {
    within(KUBE_TEST_LIMIT, async {
        let c = cluster(FakeConfig::new(NS)).await;
        let run = |args: Vec<String>, kubeconfig: PathBuf| async move {
            let out = tokio::process::Command::new(BIN)
                .args(["serve", "--runtime", "kubernetes"])
                .args(args)
                .env("KUBECONFIG", kubeconfig)
                .env_remove("KUBERNETES_SERVICE_HOST")
                .stdin(Stdio::null())
                .output();
            let out = tokio::time::timeout(Duration::from_secs(30), out).await.expect("exits").expect("runs");
            (out.status.code(), String::from_utf8_lossy(&out.stderr).to_string())
        };
        let (code, err) = run(vec!["--namespace".into(), "nope".into()], c.kubeconfig.clone()).await;
        assert_eq!(code, Some(2));
        assert!(err.contains("namespace `nope` does not exist"), "{err}");
        assert_eq!(err.lines().filter(|l| l.starts_with("error")).count(), 1, "{err}");

        let dir = TempDir::new();
        let unreachable = dir.0.join("kubeconfig");
        let text = std::fs::read_to_string(&c.kubeconfig).unwrap().replace(c.fake.url(), "http://127.0.0.1:9");
        std::fs::write(&unreachable, text).unwrap();
        let (code, err) = run(vec![], unreachable).await;
        assert_eq!(code, Some(2));
        assert!(err.contains("cannot reach the Kubernetes API server at http://127.0.0.1:9"), "{err}");

        let (code, err) = run(vec![], dir.0.join("missing")).await;
        assert_eq!(code, Some(2));
        assert!(err.contains("no Kubernetes configuration") || err.contains("kubeconfig"), "{err}");
    })
    .await;
}

/// Against a real cluster: `KUBECONFIG=… cargo test --test integration -- --ignored kubernetes`.
/// Needs the server image (`--server-image`, env MCP_EPHEMERAL_SERVER_IMAGE) present in the cluster.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a cluster"]
async fn on_a_real_cluster_time_answers_through_the_gateway() {
    let mut cmd = tokio::process::Command::new(BIN);
    cmd.args(["serve", "--runtime", "kubernetes"]);
    let (transport, _) = TokioChildProcess::builder(cmd).stderr(Stdio::inherit()).spawn().expect("spawn meta");
    let meta: Client = Recorder::default().serve(transport).await.expect("initialize");
    let server = call_ok(&meta, "create_mcp_server", json!({"preset": "time", "wait_for_ready": true})).await;
    let job = server["job_name"].as_str().unwrap().to_string();
    let client = connect_http(server["urls"]["mcp"].as_str().unwrap()).await;
    let res = call(&client, "get_current_time", json!({"timezone": "UTC"})).await;
    assert!(text(&res).contains("UTC"), "{}", text(&res));
    let deleted = call_ok(&meta, "delete_mcp_server", json!({"job_name": job, "wait_for_deletion": true})).await;
    assert_eq!(deleted["phase"], Value::from("Deleted"));
}
