//! The fake Kubernetes API server (tests/support/fake_kube) checked with the real kube client:
//! if kube's `Api`, `watcher` and `await_condition` behave against it as against a cluster, the
//! runtime's tests can trust it.

use std::time::Duration;

use anyhow::Result;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::{
    batch::v1::Job,
    core::v1::{ConfigMap, Event, Namespace, Pod, ResourceRequirements, Secret, Service},
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::{
    Api,
    api::{DeleteParams, ListParams, LogParams, Patch, PatchParams, PostParams},
    runtime::{WatchStreamExt, wait::await_condition, watcher},
};
use serde_json::{Value, json};

use crate::fake_kube::{Delays, FakeConfig, FakeKube, Script};

const NS: &str = "mcp";
const LIMIT: Duration = Duration::from_secs(2);

fn job(name: &str, image: &str, command: &[&str]) -> Job {
    serde_json::from_value(json!({
        "metadata": { "name": name, "labels": { "app": "mcp" } },
        "spec": {
            "backoffLimit": 0,
            "template": {
                "metadata": { "labels": { "app": "mcp", "server": name } },
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{ "name": "mcp", "image": image, "command": command,
                                     "ports": [{ "containerPort": 8080 }] }],
                },
            },
        },
    }))
    .expect("a Job")
}

fn owned<K: serde::de::DeserializeOwned>(obj: Value, owner: &Job) -> K {
    let mut obj = obj;
    obj["metadata"]["ownerReferences"] = json!([{
        "apiVersion": "batch/v1", "kind": "Job", "name": owner.metadata.name, "uid": owner.metadata.uid,
        "controller": true, "blockOwnerDeletion": true,
    }]);
    serde_json::from_value(obj).expect("an object")
}

fn pod_ready(p: Option<&Pod>) -> bool {
    p.and_then(|p| p.status.as_ref()?.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn api_status(e: kube::Error) -> Box<kube::core::Status> {
    match e {
        kube::Error::Api(s) => s,
        other => panic!("expected an API error, got {other:?}"),
    }
}

/// Start a fake with namespace `NS` and return it with a client defaulting to it.
async fn start(config: FakeConfig) -> (FakeKube, kube::Client) {
    let fake = FakeKube::start(config).await;
    let client = fake.client(NS);
    (fake, client)
}

/// The name of the (first) pod the Job controller made for `job`.
async fn pod_of(fake: &FakeKube, job: &str) -> String {
    let found = fake
        .wait_until(LIMIT, |f| f.list_json("pods", Some(NS)).iter().any(|p| p["metadata"]["labels"]["job-name"] == job))
        .await;
    assert!(found, "the job controller creates a pod for {job}");
    let pods = fake.list_json("pods", Some(NS));
    let pod = pods.iter().find(|p| p["metadata"]["labels"]["job-name"] == job).expect("pod");
    pod["metadata"]["name"].as_str().expect("name").to_string()
}

async fn raw_get(fake: &FakeKube, path: &str) -> (u16, Value) {
    let resp = reqwest::get(format!("{}{path}", fake.url())).await.expect("GET");
    let code = resp.status().as_u16();
    (code, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn a_created_job_gets_a_pod_that_becomes_ready_and_the_watcher_sees_it() -> Result<()> {
    let (fake, client) = start(FakeConfig::new(NS)).await;
    let jobs: Api<Job> = Api::namespaced(client.clone(), NS);
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    let seen = tokio::spawn(
        watcher(pods.clone(), watcher::Config::default().labels("app=mcp"))
            .default_backoff()
            .applied_objects()
            .try_filter(|p| futures::future::ready(pod_ready(Some(p))))
            .boxed()
            .into_future(),
    );

    let created = jobs.create(&PostParams::default(), &job("srv", "ghcr.io/acme/mcp:1", &["serve"])).await?;
    let uid = created.metadata.uid.clone().expect("uid");
    assert!(created.metadata.resource_version.is_some() && created.metadata.creation_timestamp.is_some());
    assert_eq!(created.metadata.namespace.as_deref(), Some(NS));
    let selector = created.spec.as_ref().and_then(|s| s.selector.as_ref()).and_then(|s| s.match_labels.clone());
    assert_eq!(selector.unwrap()["batch.kubernetes.io/controller-uid"], uid, "the API server defaults the selector");

    let name = pod_of(&fake, "srv").await;
    assert!(name.starts_with("srv-") && name.len() == "srv-".len() + 5, "pod name {name}");
    let pod = tokio::time::timeout(LIMIT, await_condition(pods.clone(), &name, pod_ready)).await??.expect("pod");
    let labels = pod.metadata.labels.clone().unwrap_or_default();
    for (k, v) in [("app", "mcp"), ("server", "srv"), ("job-name", "srv"), ("batch.kubernetes.io/job-name", "srv")] {
        assert_eq!(labels.get(k).map(String::as_str), Some(v), "label {k}");
    }
    assert_eq!(labels["controller-uid"], uid);
    let owner = &pod.metadata.owner_references.as_ref().expect("owner")[0];
    assert_eq!((owner.kind.as_str(), owner.uid.as_str(), owner.controller), ("Job", uid.as_str(), Some(true)));
    let spec = pod.spec.as_ref().expect("spec");
    assert_eq!(spec.node_name.as_deref(), Some("fake-node"));
    let status = pod.status.as_ref().expect("status");
    assert_eq!(status.phase.as_deref(), Some("Running"));
    assert!(status.pod_ip.as_deref().is_some_and(|ip| ip.starts_with("10.0.")), "{:?}", status.pod_ip);
    let cs = &status.container_statuses.as_ref().expect("container statuses")[0];
    assert!(cs.ready && cs.state.as_ref().and_then(|s| s.running.as_ref()).is_some());

    // The Job status follows.
    let job_ready = |j: Option<&Job>| j.and_then(|j| j.status.as_ref()).is_some_and(|s| s.ready == Some(1));
    let j = tokio::time::timeout(LIMIT, await_condition(jobs.clone(), "srv", job_ready)).await??.expect("job");
    let js = j.status.expect("status");
    assert_eq!((js.active, js.start_time.is_some()), (Some(1), true));

    // kubelet and scheduler events, found the way the runtime will look for them.
    let events: Api<Event> = Api::namespaced(client.clone(), NS);
    let lp = ListParams::default().fields(&format!("involvedObject.name={name},involvedObject.kind=Pod"));
    let reasons: Vec<String> = events.list(&lp).await?.items.into_iter().filter_map(|e| e.reason).collect();
    for r in ["Scheduled", "Pulling", "Pulled", "Created", "Started"] {
        assert!(reasons.iter().any(|x| x == r), "event {r} in {reasons:?}");
    }

    let (first, _) = tokio::time::timeout(LIMIT, seen).await??;
    assert_eq!(first.expect("watched pod")?.metadata.name.as_deref(), Some(name.as_str()));
    Ok(())
}

#[tokio::test]
async fn the_watcher_lists_then_watches_from_the_list_resource_version() -> Result<()> {
    let (fake, client) = start(FakeConfig::new(NS)).await;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), NS);
    secrets.create(&PostParams::default(), &serde_json::from_value(json!({"metadata": {"name": "a"}}))?).await?;
    let list_rv = fake.resource_version();
    let mut stream = watcher(secrets.clone(), watcher::Config::default()).default_backoff().applied_objects().boxed();
    let first = tokio::time::timeout(LIMIT, stream.try_next()).await??.expect("an object");
    assert_eq!(first.metadata.name.as_deref(), Some("a"));
    // The watch starts once the listed objects are consumed.
    let next = tokio::spawn(async move { stream.try_next().await });
    assert!(fake.wait_until(LIMIT, |f| f.requests().iter().any(|r| r.verb == "watch")).await);
    secrets.create(&PostParams::default(), &serde_json::from_value(json!({"metadata": {"name": "b"}}))?).await?;
    let second = tokio::time::timeout(LIMIT, next).await???.expect("an object");
    assert_eq!(second.metadata.name.as_deref(), Some("b"));

    let reqs: Vec<_> = fake.requests().into_iter().filter(|r| r.resource == "secrets" && r.verb != "create").collect();
    assert_eq!(reqs.len(), 2, "{reqs:#?}");
    assert_eq!((reqs[0].verb.as_str(), reqs[0].path.as_str()), ("list", "/api/v1/namespaces/mcp/secrets?&limit=500"));
    assert_eq!(reqs[1].verb, "watch");
    assert_eq!(
        reqs[1].path,
        format!(
            "/api/v1/namespaces/mcp/secrets?&watch=true&timeoutSeconds=290&allowWatchBookmarks=true&resourceVersion={list_rv}"
        )
    );
    Ok(())
}

#[tokio::test]
async fn api_errors_are_status_bodies_that_kube_maps_to_not_found_and_already_exists() -> Result<()> {
    let (fake, client) = start(FakeConfig::new(NS)).await;
    let jobs: Api<Job> = Api::namespaced(client.clone(), NS);
    let s = api_status(jobs.get("x").await.unwrap_err());
    assert!(s.is_not_found(), "{s:?}");

    let (code, body) = raw_get(&fake, "/apis/batch/v1/namespaces/mcp/jobs/x").await;
    assert_eq!(code, 404);
    assert_eq!(
        body,
        json!({"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"jobs.batch \"x\" not found",
               "reason":"NotFound","details":{"name":"x","group":"batch","kind":"jobs"},"code":404})
    );
    let (_, body) = raw_get(&fake, "/api/v1/namespaces/mcp/pods/p").await;
    assert_eq!(body["message"], "pods \"p\" not found");
    assert_eq!(body["details"], json!({"name": "p", "kind": "pods"}));

    jobs.create(&PostParams::default(), &job("dup", "img:1", &[])).await?;
    let s = api_status(jobs.create(&PostParams::default(), &job("dup", "img:1", &[])).await.unwrap_err());
    assert!(s.is_already_exists(), "{s:?}");
    assert_eq!((s.code, s.message.as_str()), (409, "jobs.batch \"dup\" already exists"));

    let elsewhere: Api<Job> = Api::namespaced(client.clone(), "nope");
    let s = api_status(elsewhere.create(&PostParams::default(), &job("j", "img:1", &[])).await.unwrap_err());
    assert!(s.is_not_found() && s.message == "namespaces \"nope\" not found", "{s:?}");
    assert!(elsewhere.list(&ListParams::default()).await?.items.is_empty(), "listing a missing namespace is empty");

    let bad = job("Bad_Name", "img:1", &[]);
    let s = api_status(jobs.create(&PostParams::default(), &bad).await.unwrap_err());
    assert!(
        s.is_invalid() && s.message.starts_with("Job.batch \"Bad_Name\" is invalid: metadata.name: Invalid value"),
        "{s:?}"
    );
    let mut always = job("always", "img:1", &[]);
    always.spec.as_mut().unwrap().template.spec.as_mut().unwrap().restart_policy = Some("Always".into());
    let s = api_status(jobs.create(&PostParams::default(), &always).await.unwrap_err());
    assert!(s.message.contains("spec.template.spec.restartPolicy: Unsupported value: \"Always\""), "{s:?}");

    let namespaces: Api<Namespace> = Api::all(client.clone());
    assert_eq!(namespaces.get(NS).await?.status.and_then(|s| s.phase).as_deref(), Some("Active"));
    assert!(api_status(namespaces.get("nope").await.unwrap_err()).is_not_found());
    Ok(())
}

#[tokio::test]
async fn label_and_field_selectors_filter_lists_like_the_api_server() -> Result<()> {
    let (_fake, client) = start(FakeConfig::new(NS)).await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), NS);
    for (name, labels) in [("a", json!({"app": "a", "tier": "x"})), ("b", json!({"app": "b"})), ("c", json!({}))] {
        cms.create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}}))?,
        )
        .await?;
    }
    let names = |sel: &'static str| {
        let cms = cms.clone();
        async move {
            let list = cms.list(&ListParams::default().labels(sel)).await.expect("list");
            list.items.into_iter().filter_map(|c| c.metadata.name).collect::<Vec<_>>().join(",")
        }
    };
    assert_eq!(names("app=a").await, "a");
    assert_eq!(names("app==a").await, "a");
    assert_eq!(names("app!=a").await, "b,c");
    assert_eq!(names("app").await, "a,b");
    assert_eq!(names("!app").await, "c");
    assert_eq!(names("app in (a,b)").await, "a,b");
    assert_eq!(names("app notin (a)").await, "b,c");
    assert_eq!(names("app,tier=x").await, "a");
    assert_eq!(names("app=b,tier=x").await, "");

    let by_name = cms.list(&ListParams::default().fields("metadata.name=b")).await?;
    assert_eq!(by_name.items.len(), 1);
    assert!(by_name.metadata.resource_version.is_some());
    let s = api_status(cms.list(&ListParams::default().fields("data.x=1")).await.unwrap_err());
    assert_eq!((s.code, s.message.as_str()), (400, "field label not supported: data.x"));

    let page = cms.list(&ListParams::default().limit(2)).await?;
    assert_eq!(page.items.len(), 2);
    let rest =
        cms.list(&ListParams::default().limit(2).continue_token(page.metadata.continue_.as_deref().unwrap())).await?;
    assert_eq!(rest.items.into_iter().filter_map(|c| c.metadata.name).collect::<Vec<_>>(), ["c"]);
    Ok(())
}

#[tokio::test]
async fn background_delete_collects_dependents_while_orphan_keeps_the_pod() -> Result<()> {
    let (fake, client) = start(FakeConfig::new(NS)).await;
    let jobs: Api<Job> = Api::namespaced(client.clone(), NS);
    let services: Api<Service> = Api::namespaced(client.clone(), NS);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), NS);

    let a = jobs.create(&PostParams::default(), &job("a", "img:1", &[])).await?;
    let pod_a = pod_of(&fake, "a").await;
    let svc = json!({"metadata": {"name": "a"}, "spec": {"selector": {"server": "a"}, "ports": [{"port": 8080}]}});
    let svc = services.create(&PostParams::default(), &owned(svc, &a)).await?;
    assert!(svc.spec.and_then(|s| s.cluster_ip).is_some_and(|ip| ip.starts_with("10.96.")));
    secrets
        .create(&PostParams::default(), &owned(json!({"metadata": {"name": "a"}, "stringData": {"K": "v"}}), &a))
        .await?;
    assert_eq!(fake.get_json("secrets", NS, "a").unwrap()["data"]["K"], "dg==", "stringData is stored as data");

    let deleted = jobs.delete("a", &DeleteParams::background()).await?;
    let status = deleted.right().expect("a Job deleted at once answers with a Success Status");
    assert_eq!(status.status, Some(kube::core::response::StatusSummary::Success));
    let gone = fake
        .wait_until(LIMIT, |f| {
            f.get_json("pods", NS, &pod_a).is_none()
                && f.get_json("services", NS, "a").is_none()
                && f.get_json("secrets", NS, "a").is_none()
        })
        .await;
    assert!(gone, "pod, service and secret are garbage-collected");

    // Without a propagation policy a Job orphans its pods, as in real Kubernetes.
    jobs.create(&PostParams::default(), &job("b", "img:1", &[])).await?;
    let pod_b = pod_of(&fake, "b").await;
    let pending = jobs.delete("b", &DeleteParams::default()).await?.left().expect("the Job, being deleted");
    assert!(pending.metadata.deletion_timestamp.is_some());
    assert_eq!(pending.metadata.finalizers, Some(vec!["orphan".to_string()]));
    assert!(fake.wait_until(LIMIT, |f| f.get_json("jobs", NS, "b").is_none()).await);
    let pod = fake.get_json("pods", NS, &pod_b).expect("the orphaned pod stays");
    assert!(pod["metadata"].get("ownerReferences").is_none(), "{pod}");

    // Foreground: the owner goes after its dependents.
    jobs.create(&PostParams::default(), &job("c", "img:1", &[])).await?;
    let pod_c = pod_of(&fake, "c").await;
    let pending = jobs.delete("c", &DeleteParams::foreground()).await?.left().expect("the Job, being deleted");
    assert_eq!(pending.metadata.finalizers, Some(vec!["foregroundDeletion".to_string()]));
    assert!(fake.wait_until(LIMIT, |f| f.get_json("jobs", NS, "c").is_none()).await);
    assert!(fake.get_json("pods", NS, &pod_c).is_none());

    // An object whose owner never existed is collected too.
    let ghost: Job = serde_json::from_value(json!({"metadata": {"name": "ghost", "uid": "00000000-dead"}}))?;
    secrets.create(&PostParams::default(), &owned(json!({"metadata": {"name": "stray"}}), &ghost)).await?;
    assert!(fake.wait_until(LIMIT, |f| f.get_json("secrets", NS, "stray").is_none()).await);
    Ok(())
}

#[tokio::test]
async fn image_pull_failure_and_crash_scripts_look_like_a_kubelet() -> Result<()> {
    let config = FakeConfig::new(NS)
        .rule("bad-image", Script::ImagePullFailure)
        .rule("crasher", Script::Crash { exit_code: 3, logs: vec!["boom: no config".into()] });
    let (fake, client) = start(config).await;
    let jobs: Api<Job> = Api::namespaced(client.clone(), NS);
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    jobs.create(&PostParams::default(), &job("pull", "bad-image:1", &[])).await?;
    jobs.create(&PostParams::default(), &job("crash", "img:1", &["crasher", "--now"])).await?;

    let pull = pod_of(&fake, "pull").await;
    let waiting = |reason: &'static str| {
        move |p: Option<&Pod>| {
            p.and_then(|p| {
                p.status
                    .as_ref()?
                    .container_statuses
                    .as_ref()?
                    .first()?
                    .state
                    .as_ref()?
                    .waiting
                    .as_ref()?
                    .reason
                    .clone()
            })
            .is_some_and(|r| r == reason)
        }
    };
    let p =
        tokio::time::timeout(LIMIT, await_condition(pods.clone(), &pull, waiting("ImagePullBackOff"))).await??.unwrap();
    assert_eq!(p.status.and_then(|s| s.phase).as_deref(), Some("Pending"));
    let s = api_status(pods.logs(&pull, &LogParams::default()).await.unwrap_err());
    assert_eq!(
        s.message,
        format!("container \"mcp\" in pod \"{pull}\" is waiting to start: trying and failing to pull image")
    );
    let events: Api<Event> = Api::namespaced(client.clone(), NS);
    let evs = events.list(&ListParams::default().fields(&format!("involvedObject.name={pull}"))).await?.items;
    assert!(evs.iter().any(|e| e.type_.as_deref() == Some("Warning")
        && e.message.as_deref().is_some_and(|m| m.starts_with("Failed to pull image \"bad-image:1\""))));

    let failed = |j: Option<&Job>| {
        j.and_then(|j| j.status.as_ref()?.conditions.clone())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Failed" && c.status == "True"))
    };
    let j = tokio::time::timeout(LIMIT, await_condition(jobs.clone(), "crash", failed)).await??.unwrap();
    let st = j.status.unwrap();
    let cond = st.conditions.unwrap().into_iter().find(|c| c.type_ == "Failed").unwrap();
    assert_eq!((cond.reason.as_deref(), st.failed, st.active), (Some("BackoffLimitExceeded"), Some(1), Some(0)));
    let crash = pod_of(&fake, "crash").await;
    let p = pods.get(&crash).await?;
    let ps = p.status.unwrap();
    assert_eq!(ps.phase.as_deref(), Some("Failed"));
    let term = ps.container_statuses.unwrap()[0].state.clone().unwrap().terminated.unwrap();
    assert_eq!((term.exit_code, term.reason.as_deref()), (3, Some("Error")));
    let logs = pods.logs(&crash, &LogParams { tail_lines: Some(1), ..Default::default() }).await?;
    assert_eq!(logs, "boom: no config\n");
    Ok(())
}

#[tokio::test]
async fn a_missing_env_from_secret_blocks_the_pod_until_it_appears() -> Result<()> {
    let (fake, client) = start(FakeConfig::new(NS)).await;
    let jobs: Api<Job> = Api::namespaced(client.clone(), NS);
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    let mut j = job("env", "img:1", &[]);
    j.spec.as_mut().unwrap().template.spec.as_mut().unwrap().containers[0].env_from =
        Some(vec![serde_json::from_value(json!({"secretRef": {"name": "env-secrets"}}))?]);
    jobs.create(&PostParams::default(), &j).await?;
    let name = pod_of(&fake, "env").await;
    let config_error = |p: Option<&Pod>| {
        p.and_then(|p| p.status.as_ref()?.container_statuses.as_ref()?.first()?.state.as_ref()?.waiting.clone())
            .is_some_and(|w| w.reason.as_deref() == Some("CreateContainerConfigError"))
    };
    let p = tokio::time::timeout(LIMIT, await_condition(pods.clone(), &name, config_error)).await??.unwrap();
    let w = p.status.unwrap().container_statuses.unwrap()[0].state.clone().unwrap().waiting.unwrap();
    assert_eq!(w.message.as_deref(), Some("secret \"env-secrets\" not found"));

    let secrets: Api<Secret> = Api::namespaced(client.clone(), NS);
    secrets
        .create(&PostParams::default(), &serde_json::from_value(json!({"metadata": {"name": "env-secrets"}}))?)
        .await?;
    tokio::time::timeout(LIMIT, await_condition(pods.clone(), &name, pod_ready)).await??;
    Ok(())
}

#[tokio::test]
async fn crash_loop_unschedulable_and_never_ready_scripts_show_their_states() -> Result<()> {
    let config = FakeConfig::new(NS)
        .rule("loop", Script::CrashLoop { exit_code: 1, logs: vec!["crashing".into()] })
        .rule("huge", Script::Unschedulable)
        .rule("slow", Script::NeverReady);
    let (fake, client) = start(config).await;
    let jobs: Api<Job> = Api::namespaced(client.clone(), NS);
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    for (name, image) in [("loop", "loop:1"), ("huge", "huge:1"), ("slow", "slow:1")] {
        jobs.create(&PostParams::default(), &job(name, image, &[])).await?;
    }
    let looping = pod_of(&fake, "loop").await;
    let restarted = |p: Option<&Pod>| {
        p.and_then(|p| p.status.as_ref()?.container_statuses.as_ref()?.first().cloned()).is_some_and(|c| {
            c.restart_count >= 1
                && c.state.and_then(|s| s.waiting).and_then(|w| w.reason).as_deref() == Some("CrashLoopBackOff")
        })
    };
    tokio::time::timeout(LIMIT, await_condition(pods.clone(), &looping, restarted)).await??;
    let previous = pods.logs(&looping, &LogParams { previous: true, ..Default::default() }).await?;
    assert!(previous.ends_with("crashing\n"), "{previous}");

    let huge = pod_of(&fake, "huge").await;
    let unschedulable = |p: Option<&Pod>| {
        p.and_then(|p| p.status.as_ref()?.conditions.clone()).is_some_and(|cs| {
            cs.iter().any(|c| c.type_ == "PodScheduled" && c.reason.as_deref() == Some("Unschedulable"))
        })
    };
    tokio::time::timeout(LIMIT, await_condition(pods.clone(), &huge, unschedulable)).await??;
    let s = api_status(pods.logs(&huge, &LogParams::default()).await.unwrap_err());
    assert_eq!(s.message, format!("pod {huge} does not have a host assigned"));

    let slow = pod_of(&fake, "slow").await;
    let unhealthy = fake
        .wait_until(LIMIT, |f| {
            f.list_json("events", Some(NS))
                .iter()
                .any(|e| e["involvedObject"]["name"] == slow.as_str() && e["reason"] == "Unhealthy")
        })
        .await;
    assert!(unhealthy);
    let p = pods.get(&slow).await?;
    assert_eq!(p.status.as_ref().and_then(|s| s.phase.as_deref()), Some("Running"));
    assert!(!pod_ready(Some(&p)));
    Ok(())
}

#[tokio::test]
async fn a_dropped_watch_is_resumed_and_a_compacted_one_relisted_by_the_kube_watcher() -> Result<()> {
    let (fake, client) = start(FakeConfig::new(NS)).await;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), NS);
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), NS);
    // Consume the watcher in a task, so that it keeps its watch open.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut stream = watcher(secrets.clone(), watcher::Config::default()).default_backoff().applied_objects().boxed();
    tokio::spawn(async move {
        while let Some(s) = stream.next().await {
            let _ = tx.send(s.map(|s| s.metadata.name.unwrap_or_default()));
        }
    });
    // The next object's name; watcher errors (the 410) are collected.
    let mut errors = Vec::new();
    let mut next_name = async || -> Result<String> {
        loop {
            match tokio::time::timeout(LIMIT, rx.recv()).await?.expect("the watcher goes on") {
                Ok(name) => return Ok(name),
                Err(e) => errors.push(e.to_string()),
            }
        }
    };
    let watches = |f: &FakeKube| f.requests().into_iter().filter(|r| r.verb == "watch").count();
    let secret = |name: &str| serde_json::from_value::<Secret>(json!({"metadata": {"name": name}})).unwrap();
    secrets.create(&PostParams::default(), &secret("a")).await?;
    assert_eq!(next_name().await?, "a");
    assert!(fake.wait_until(LIMIT, |f| watches(f) == 1).await);

    fake.faults().drop_watches();
    secrets.create(&PostParams::default(), &secret("b")).await?;
    assert_eq!(next_name().await?, "b");
    let watches: Vec<_> = fake.requests().into_iter().filter(|r| r.verb == "watch").collect();
    assert_eq!(watches.len(), 2, "{watches:?}");
    assert!(!watches[1].path.ends_with("resourceVersion=0"), "resumed from where it was: {}", watches[1].path);

    // History compacted past the watcher's resourceVersion: 410 Gone, then a new list.
    cms.create(&PostParams::default(), &serde_json::from_value(json!({"metadata": {"name": "other"}}))?).await?;
    fake.compact();
    fake.faults().drop_watches();
    secrets.create(&PostParams::default(), &secret("c")).await?;
    let mut names = Vec::new();
    while !names.contains(&"c".to_string()) {
        names.push(next_name().await?);
    }
    assert!(names.contains(&"a".to_string()), "the re-list applies every object again: {names:?}");
    let lists = fake.requests().into_iter().filter(|r| r.verb == "list" && r.resource == "secrets").count();
    assert_eq!(lists, 2, "the watcher re-listed after 410");

    // A watch that ends after each event.
    fake.faults().drop_watches_after(Some(1));
    for n in ["d", "e"] {
        secrets.create(&PostParams::default(), &secret(n)).await?;
        assert_eq!(next_name().await?, n);
    }
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].contains("too old resource version"), "{errors:?}");
    Ok(())
}

#[tokio::test]
async fn injected_faults_surface_as_the_matching_kube_errors() -> Result<()> {
    let (fake, client) = start(FakeConfig::new(NS)).await;
    let jobs: Api<Job> = Api::namespaced(client.clone(), NS);
    let faults = fake.faults();

    faults.fail_next("list", "jobs", 1);
    let s = api_status(jobs.list(&ListParams::default()).await.unwrap_err());
    assert_eq!((s.code, s.reason.as_str()), (500, "InternalError"));
    jobs.list(&ListParams::default()).await?;

    faults.fail_for("get", "*", Duration::from_millis(150));
    assert_eq!(api_status(jobs.get("x").await.unwrap_err()).code, 500);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(api_status(jobs.get("x").await.unwrap_err()).is_not_found());

    faults.forbid("get", "namespaces");
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let s = api_status(namespaces.get(NS).await.unwrap_err());
    assert!(s.is_forbidden());
    assert_eq!(
        s.message,
        "namespaces \"mcp\" is forbidden: User \"system:serviceaccount:default:fake\" cannot get resource \"namespaces\" in API group \"\" at the cluster scope"
    );

    faults.conflict_next_create("jobs");
    let s = api_status(jobs.create(&PostParams::default(), &job("j", "img:1", &[])).await.unwrap_err());
    assert!(s.is_conflict(), "{s:?}");
    jobs.create(&PostParams::default(), &job("j", "img:1", &[])).await?;

    faults.delay("get", "jobs", Duration::from_millis(200));
    let t = std::time::Instant::now();
    jobs.get("j").await?;
    assert!(t.elapsed() >= Duration::from_millis(200));
    faults.clear();

    // kube's client retries 503 by itself (its default retry policy: 429, 503, 504).
    faults.fail_next_with("get", "jobs", 1, 503);
    jobs.get("j").await?;
    let statuses: Vec<u16> =
        fake.requests().iter().filter(|r| r.verb == "get" && r.resource == "jobs").map(|r| r.status).collect();
    assert_eq!(&statuses[statuses.len() - 2..], [503, 200]);
    Ok(())
}

#[tokio::test]
async fn pod_logs_honour_tail_lines_and_answer_like_the_kubelet() -> Result<()> {
    let (fake, client) = start(FakeConfig::new(NS)).await;
    let jobs: Api<Job> = Api::namespaced(client.clone(), NS);
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    jobs.create(&PostParams::default(), &job("logs", "img:1", &[])).await?;
    let name = pod_of(&fake, "logs").await;
    tokio::time::timeout(LIMIT, await_condition(pods.clone(), &name, pod_ready)).await??;
    fake.append_log(NS, &name, "second line");
    fake.append_log(NS, &name, "third line");
    let all = pods.logs(&name, &LogParams::default()).await?;
    assert_eq!(all, "mcp-ephemeral bridge listening on 0.0.0.0:8080\nsecond line\nthird line\n");
    let tail = pods
        .logs(&name, &LogParams { tail_lines: Some(2), container: Some("mcp".into()), ..Default::default() })
        .await?;
    assert_eq!(tail, "second line\nthird line\n");
    assert!(api_status(pods.logs("nope", &LogParams::default()).await.unwrap_err()).is_not_found());

    // A container still being created.
    fake.set_delays(Delays { start: Duration::from_secs(30), ..Delays::default() });
    jobs.create(&PostParams::default(), &job("slow", "img:1", &[])).await?;
    let slow = pod_of(&fake, "slow").await;
    assert!(
        fake.wait_until(LIMIT, |f| f.get_json("pods", NS, &slow).unwrap()["spec"]["nodeName"] == "fake-node").await
    );
    let s = api_status(pods.logs(&slow, &LogParams::default()).await.unwrap_err());
    assert_eq!(
        (s.code, s.message),
        (400, format!("container \"mcp\" in pod \"{slow}\" is waiting to start: ContainerCreating"))
    );
    Ok(())
}

#[tokio::test]
async fn quantities_are_stored_in_the_api_servers_canonical_form() -> Result<()> {
    let (fake, client) = start(FakeConfig::new(NS)).await;
    let jobs: Api<Job> = Api::namespaced(client.clone(), NS);
    // Per container: requests, then limits, as (resource, sent, stored) — Kubernetes' own forms.
    let containers = [
        (
            [("cpu", "0.5", "500m"), ("memory", "0.5Gi", "512Mi"), ("ephemeral-storage", "1.5Ki", "1536")],
            [("cpu", "1000m", "1"), ("memory", "1024Mi", "1Gi"), ("ephemeral-storage", "2000k", "2M")],
        ),
        (
            [("cpu", ".1", "100m"), ("memory", "128Mi", "128Mi"), ("ephemeral-storage", "0", "0")],
            [("cpu", "1500m", "1500m"), ("memory", "1500M", "1500M"), ("ephemeral-storage", "1500", "1500")],
        ),
    ];
    let quantities = |list: &[(&str, &str, &str)]| {
        list.iter()
            .map(|(k, v, _)| (k.to_string(), Quantity(v.to_string())))
            .collect::<std::collections::BTreeMap<_, _>>()
    };
    let mut j = job("q", "img:1", &[]);
    let pod = j.spec.as_mut().unwrap().template.spec.as_mut().unwrap();
    let first = pod.containers[0].clone();
    pod.containers = containers
        .iter()
        .enumerate()
        .map(|(i, (requests, limits))| k8s_openapi::api::core::v1::Container {
            name: format!("c{i}"),
            resources: Some(ResourceRequirements {
                requests: Some(quantities(requests)),
                limits: Some(quantities(limits)),
                ..Default::default()
            }),
            ..first.clone()
        })
        .collect();
    let stored = jobs.create(&PostParams::default(), &j).await?;
    let stored = stored.spec.unwrap().template.spec.unwrap().containers;
    for (c, (requests, limits)) in stored.iter().zip(&containers) {
        let r = c.resources.clone().unwrap();
        for (side, list) in [(r.requests.unwrap(), requests), (r.limits.unwrap(), limits)] {
            for (k, sent, canonical) in list {
                assert_eq!(side[*k].0, *canonical, "{}: {k} {sent} is stored as {canonical}", c.name);
            }
        }
    }
    let _ = fake;
    Ok(())
}

#[tokio::test]
async fn patches_merge_and_updates_check_the_resource_version() -> Result<()> {
    let (fake, client) = start(FakeConfig::new(NS)).await;
    let jobs: Api<Job> = Api::namespaced(client.clone(), NS);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), NS);
    let a = jobs.create(&PostParams::default(), &job("a", "img:1", &[])).await?;
    let b = jobs.create(&PostParams::default(), &job("b", "img:1", &[])).await?;

    let patch =
        json!({"metadata": {"labels": {"pool": "claimed", "app": null}}, "spec": {"activeDeadlineSeconds": 600}});
    let patched = jobs.patch("a", &PatchParams::default(), &Patch::Merge(&patch)).await?;
    let labels = patched.metadata.labels.clone().unwrap();
    assert_eq!((labels.get("pool").map(String::as_str), labels.get("app")), (Some("claimed"), None));
    assert_eq!(patched.spec.unwrap().active_deadline_seconds, Some(600));
    let rv = |m: &kube::core::ObjectMeta| m.resource_version.as_deref().unwrap().parse::<u64>().unwrap();
    assert!(rv(&patched.metadata) > rv(&a.metadata));
    assert_eq!(patched.metadata.generation, Some(2));

    // Strategic merge: ownerReferences merge by uid.
    secrets.create(&PostParams::default(), &owned(json!({"metadata": {"name": "s"}}), &a)).await?;
    let second: Secret = owned(json!({"metadata": {"name": "s"}}), &b);
    let p = secrets.patch("s", &PatchParams::default(), &Patch::Strategic(&second)).await?;
    assert_eq!(p.metadata.owner_references.unwrap().len(), 2);

    // A stale resourceVersion conflicts; the template of a Job is immutable.
    let stale = json!({"metadata": {"resourceVersion": a.metadata.resource_version, "labels": {"x": "y"}}});
    assert!(
        api_status(jobs.patch("a", &PatchParams::default(), &Patch::Merge(&stale)).await.unwrap_err()).is_conflict()
    );
    let template = json!({"spec": {"template": {"spec": {"containers": [{"name": "mcp", "image": "other:2"}]}}}});
    let s = api_status(jobs.patch("a", &PatchParams::default(), &Patch::Merge(&template)).await.unwrap_err());
    assert!(s.is_invalid() && s.message.contains("spec.template: Invalid value"), "{s:?}");
    // A patch cannot change the status (a subresource).
    let status = json!({"status": {"succeeded": 5}});
    let p = jobs.patch("b", &PatchParams::default(), &Patch::Merge(&status)).await?;
    assert_ne!(p.status.and_then(|s| s.succeeded), Some(5));
    let _ = fake;
    Ok(())
}

#[tokio::test]
async fn the_job_controller_honours_deadlines_ttl_suspend_and_counts_lost_pods_as_failed() -> Result<()> {
    let config = FakeConfig::new(NS).rule("done", Script::Complete { logs: vec!["bye".into()] });
    let (fake, client) = start(config).await;
    let jobs: Api<Job> = Api::namespaced(client.clone(), NS);
    let mut j = job("deadline", "img:1", &[]);
    j.spec.as_mut().unwrap().active_deadline_seconds = Some(1);
    jobs.create(&PostParams::default(), &j).await?;
    let pod = pod_of(&fake, "deadline").await;
    let failed = |j: Option<&Job>| {
        j.and_then(|j| j.status.as_ref()?.conditions.clone())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Failed" && c.reason.as_deref() == Some("DeadlineExceeded")))
    };
    tokio::time::timeout(LIMIT, await_condition(jobs.clone(), "deadline", failed)).await??;
    assert!(fake.wait_until(LIMIT, |f| f.get_json("pods", NS, &pod).is_none()).await, "the pod is deleted");

    let mut j = job("finite", "done:1", &[]);
    j.spec.as_mut().unwrap().ttl_seconds_after_finished = Some(0);
    jobs.create(&PostParams::default(), &j).await?;
    let pod = pod_of(&fake, "finite").await;
    let complete = kube::runtime::conditions::is_job_completed();
    let _ = tokio::time::timeout(LIMIT, await_condition(jobs.clone(), "finite", complete)).await??;
    assert!(
        fake.wait_until(LIMIT, |f| f.get_json("jobs", NS, "finite").is_none()
            && f.get_json("pods", NS, &pod).is_none())
            .await
    );

    // Suspended: no pod until resumed.
    let mut j = job("later", "img:1", &[]);
    j.spec.as_mut().unwrap().suspend = Some(true);
    jobs.create(&PostParams::default(), &j).await?;
    let suspended = |j: Option<&Job>| {
        j.and_then(|j| j.status.as_ref()?.conditions.clone())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Suspended" && c.status == "True"))
    };
    tokio::time::timeout(LIMIT, await_condition(jobs.clone(), "later", suspended)).await??;
    assert!(!fake.list_json("pods", Some(NS)).iter().any(|p| p["metadata"]["labels"]["job-name"] == "later"));
    jobs.patch("later", &PatchParams::default(), &Patch::Merge(&json!({"spec": {"suspend": false}}))).await?;
    pod_of(&fake, "later").await;

    // A pod deleted while running counts as failed: with backoffLimit 0 the Job fails.
    jobs.create(&PostParams::default(), &job("lost", "img:1", &[])).await?;
    let lost = pod_of(&fake, "lost").await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    pods.delete(&lost, &DeleteParams::default()).await?;
    let backoff = |j: Option<&Job>| {
        j.and_then(|j| j.status.as_ref()?.conditions.clone()).is_some_and(|cs| {
            cs.iter().any(|c| c.type_ == "Failed" && c.reason.as_deref() == Some("BackoffLimitExceeded"))
        })
    };
    tokio::time::timeout(LIMIT, await_condition(jobs.clone(), "lost", backoff)).await??;
    Ok(())
}

#[tokio::test]
async fn every_request_is_recorded_with_its_rbac_verb_and_resource() -> Result<()> {
    let (fake, client) = start(FakeConfig::new(NS)).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    let jobs: Api<Job> = Api::namespaced(client.clone(), NS);
    jobs.create(&PostParams::default(), &job("r", "img:1", &[])).await?;
    let name = pod_of(&fake, "r").await;
    tokio::time::timeout(LIMIT, await_condition(pods.clone(), &name, pod_ready)).await??;
    pods.logs(&name, &LogParams::default()).await?;
    assert!(pods.portforward(&name, &[8080]).await.is_err(), "port-forward is not modelled");
    jobs.delete("r", &DeleteParams::background()).await?;

    let records = fake.requests();
    let verbs: Vec<String> = records
        .iter()
        .filter(|r| r.is_resource())
        .map(|r| format!("{} {}/{} {}", r.verb, r.group, r.resource, r.status))
        .collect();
    for expected in [
        "create batch/jobs 201",
        "list /pods 200",
        "watch /pods 200",
        "get /pods/log 200",
        "get /pods/portforward 501",
        "delete batch/jobs 200",
    ] {
        assert!(verbs.iter().any(|v| v == expected), "{expected} in {verbs:#?}");
    }
    for r in records.iter().filter(|r| r.is_resource()) {
        assert!(
            mcp_ephemeral::runtime::kubernetes::rbac::allows(&r.group, &r.resource, &r.verb),
            "{} {}/{} is not in rbac.rs",
            r.verb,
            r.group,
            r.resource
        );
    }
    Ok(())
}

#[tokio::test]
async fn kubectl_apply_dry_run_works_against_the_discovery_documents() -> Result<()> {
    // .ci/run installs kubectl; a machine without it must not pass this test silently.
    let found = std::process::Command::new("kubectl").args(["version", "--client"]).output();
    assert!(
        found.is_ok_and(|o| o.status.success()),
        "kubectl is not on PATH: install it (bash .ci/run --setup-only does)"
    );
    let fake = FakeKube::start(FakeConfig::new(NS)).await;
    let dir = std::env::temp_dir().join(format!("fake-kube-kubectl-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let kubeconfig = fake.write_kubeconfig(&dir, NS);
    let manifest = dir.join("manifest.yaml");
    std::fs::write(
        &manifest,
        r#"apiVersion: v1
kind: Namespace
metadata: {name: mcp-system}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: meta, namespace: mcp-system}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: meta, namespace: mcp-system}
rules:
- apiGroups: [batch]
  resources: [jobs]
  verbs: [create, get, list, watch, delete, patch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: meta, namespace: mcp-system}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: meta}
subjects:
- {kind: ServiceAccount, name: meta, namespace: mcp-system}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: meta, namespace: mcp-system}
spec:
  selector: {matchLabels: {app: meta}}
  template:
    metadata: {labels: {app: meta}}
    spec:
      serviceAccountName: meta
      containers:
      - {name: meta, image: "ghcr.io/acme/mcp-ephemeral:1"}
---
apiVersion: v1
kind: Service
metadata: {name: meta, namespace: mcp-system}
spec:
  selector: {app: meta}
  ports: [{port: 8000}]
"#,
    )?;
    let out = tokio::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .arg("--cache-dir")
        .arg(dir.join("cache"))
        .args(["apply", "--dry-run=client", "--validate=false", "-f"])
        .arg(&manifest)
        .output()
        .await?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let _ = std::fs::remove_dir_all(&dir);
    // kubectl asks for /version, legacy discovery, then GETs each object (and its namespace).
    for r in fake.requests() {
        assert!(r.method == "GET" && (r.status == 200 || r.status == 404), "{r:?}");
    }
    assert!(out.status.success(), "kubectl failed:\n{stdout}\n{stderr}");
    for line in [
        "namespace/mcp-system created (dry run)",
        "serviceaccount/meta created (dry run)",
        "role.rbac.authorization.k8s.io/meta created (dry run)",
        "rolebinding.rbac.authorization.k8s.io/meta created (dry run)",
        "deployment.apps/meta created (dry run)",
        "service/meta created (dry run)",
    ] {
        assert!(stdout.contains(line), "{line} in:\n{stdout}\n{stderr}");
    }
    Ok(())
}
