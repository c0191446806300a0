//! Declarative servers against the fake API server (with its process kubelet: real bridges,
//! real `uvx mcp-server-time`): an `MCPServer` applied becomes a server owned by it, Ready in
//! its status, gone with it; a pool's `maxActive` holds the rest `Pending`/`PoolFull` in creation
//! order; `stopped` suspends and resumes; `delete_mcp_server` of a resource-made server deletes
//! the resource; `list_mcp_servers` says where each server came from; of two replicas only the
//! leader reconciles, and a new leader takes over; a pool's warm member is handed out (and
//! counted) within `--max-servers`.

use std::time::{Duration, Instant};

use k8s_openapi::{
    api::{
        batch::v1::Job,
        core::v1::{Secret, Service},
    },
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    Api,
    api::{DeleteParams, Patch, PatchParams, PostParams},
};
use mcp_ephemeral::runtime::kubernetes::crd::{self, MCPPool, MCPPoolStatus, MCPServer};
use serde_json::{Value, json};

use crate::{
    kubelet::process_cluster,
    kubernetes::{Cluster, kube_meta_with_env},
    leader::{holder, holds, replica_with},
    support::*,
};

const NS: &str = "mcp-test";
const LIMIT: Duration = Duration::from_secs(150);
const CLOCK_YAML: &str = "apiVersion: mcp-ephemeral.dev/v1alpha1\nkind: MCPServer\nmetadata:\n  name: clock\n";

/// The fake with the CRDs installed, and the test's own access to them left out of the RBAC
/// check (the meta server's stays checked).
async fn cluster_with_crds() -> Cluster {
    let c = process_cluster().await;
    let crds: Api<CustomResourceDefinition> = Api::all(c.fake.client(NS));
    for crd in crd::definitions() {
        crds.create(&PostParams::default(), &crd).await.expect("register a CRD");
    }
    for verb in ["create", "get", "list", "watch"] {
        c.allow_test_access("apiextensions.k8s.io", "customresourcedefinitions", verb);
    }
    for resource in ["mcpservers", "mcppools"] {
        for verb in ["create", "get", "list", "patch", "delete", "watch"] {
            c.allow_test_access("mcp-ephemeral.dev", resource, verb);
        }
    }
    for (resource, verb) in [("jobs", "get"), ("jobs", "list"), ("services", "get"), ("secrets", "get")] {
        c.allow_test_access(if resource == "jobs" { "batch" } else { "" }, resource, verb);
    }
    c
}

/// An `MCPPool` named `name` with `spec`.
fn pool(name: &str, spec: Value) -> MCPPool {
    serde_json::from_value(json!({
        "apiVersion": "mcp-ephemeral.dev/v1alpha1",
        "kind": "MCPPool",
        "metadata": {"name": name, "namespace": NS},
        "spec": spec,
    }))
    .expect("an MCPPool")
}

fn resources(c: &Cluster) -> Api<MCPServer> {
    Api::namespaced(c.fake.client(NS), NS)
}

fn server(name: &str, spec: Value) -> MCPServer {
    serde_json::from_value(json!({
        "apiVersion": "mcp-ephemeral.dev/v1alpha1",
        "kind": "MCPServer",
        "metadata": {"name": name, "namespace": NS},
        "spec": spec,
    }))
    .expect("an MCPServer")
}

/// Poll `name`'s status until `done` holds (at most `limit`); the last status.
async fn status_until(c: &Cluster, name: &str, limit: Duration, done: impl Fn(&Value) -> bool) -> Value {
    let api = resources(c);
    let deadline = Instant::now() + limit;
    loop {
        let status = api.get(name).await.ok().and_then(|r| r.status).map(|s| serde_json::to_value(s).unwrap());
        let status = status.unwrap_or(Value::Null);
        if done(&status) {
            return status;
        }
        assert!(Instant::now() < deadline, "{name}: status not reached within {limit:?}; last {status}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Poll pool `name`'s status until `done` holds (at most `limit`); the last status.
async fn pool_until(c: &Cluster, name: &str, limit: Duration, done: impl Fn(&MCPPoolStatus) -> bool) -> MCPPoolStatus {
    let pools: Api<MCPPool> = Api::namespaced(c.fake.client(NS), NS);
    let deadline = Instant::now() + limit;
    loop {
        let status = pools.get(name).await.ok().and_then(|p| p.status).unwrap_or_default();
        if done(&status) {
            return status;
        }
        assert!(Instant::now() < deadline, "pool {name}: status not reached within {limit:?}; last {status:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn phase(status: &Value) -> &str {
    status["phase"].as_str().unwrap_or("")
}

/// The Job of resource `name`, if one exists.
fn job_of(c: &Cluster, name: &str) -> Option<Job> {
    c.fake.objects::<Job>(NS).into_iter().find(|j| {
        j.metadata.labels.as_ref().and_then(|l| l.get("mcp-ephemeral.dev/resource")).map(String::as_str) == Some(name)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_applied_mcpserver_becomes_a_ready_server_owned_by_it_and_goes_with_it() {
    within(LIMIT, async {
        let c = cluster_with_crds().await;
        let meta = kube_meta_with_env(&c, &["--ready-timeout", "25s"], &[]).await;
        // As a platform team would: kubectl apply of a YAML file (the fake serves no OpenAPI
        // document, hence --validate=false).
        let dir = c.kubeconfig.parent().unwrap().to_path_buf();
        let file = dir.join("clock.yaml");
        std::fs::write(&file, format!("{CLOCK_YAML}  namespace: {NS}\nspec:\n  preset: time\n")).unwrap();
        let began = Instant::now();
        let kubeconfig = c.kubeconfig.clone();
        let run = |args: Vec<String>| {
            let (dir, kubeconfig) = (dir.clone(), kubeconfig.clone());
            tokio::task::spawn_blocking(move || {
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                crate::fake_crds::kubectl(&dir, &kubeconfig, &args)
            })
        };
        let (ok, out) = run(vec!["apply".into(), "--validate=false".into(), "-f".into(), file.display().to_string()])
            .await
            .unwrap();
        assert!(ok, "kubectl apply: {out}");
        let status = status_until(&c, "clock", Duration::from_secs(60), |s| phase(s) == "Ready").await;
        eprintln!("MCPServer applied → status Ready in {:?}", began.elapsed());
        let (ok, out) = run(vec!["-n".into(), NS.into(), "get".into(), "mcpservers".into()]).await.unwrap();
        assert!(ok, "kubectl get: {out}");
        let header = out.lines().next().unwrap_or_default();
        assert!(header.contains("PHASE") && header.contains("URL") && header.contains("TOOLS"), "{out}");
        assert!(out.lines().any(|l| l.starts_with("clock") && l.contains("Ready")), "{out}");
        let mcp = status["urls"]["mcp"].as_str().expect("urls.mcp");
        assert!(status["tools"].to_string().contains("get_current_time"), "{status}");
        assert_eq!(status["conditions"][0]["type"], "Ready");
        assert_eq!(status["conditions"][0]["status"], "True");
        assert!(status["observedGeneration"].as_i64().is_some(), "{status}");

        let job = job_of(&c, "clock").expect("a Job for the resource");
        let resource = resources(&c).get("clock").await.unwrap();
        let owner = job.metadata.owner_references.clone().unwrap_or_default();
        assert!(
            owner.iter().any(|o| o.kind == "MCPServer" && Some(&o.uid) == resource.metadata.uid.as_ref()),
            "the Job is owned by its MCPServer: {owner:?}"
        );
        let client = connect_http(mcp).await;
        let res = call(&client, "get_current_time", json!({"timezone": "UTC"})).await;
        assert!(text(&res).contains("UTC"), "{}", text(&res));
        let _ = client.cancel().await;

        let listed = call_ok(&meta.client, "list_mcp_servers", json!({})).await;
        let entry = listed["servers"].as_array().unwrap().iter().find(|s| s["job_name"] == status["jobName"]).cloned();
        assert_eq!(entry.expect("listed")["source"], "resource");

        resources(&c).delete("clock", &DeleteParams::background()).await.unwrap();
        let job_name = job.metadata.name.clone().unwrap();
        let gone = c
            .fake
            .wait_until(Duration::from_secs(20), |f| {
                f.object::<Job>(NS, &job_name).is_none()
                    && f.object::<Service>(NS, &job_name).is_none()
                    && f.object::<Secret>(NS, &format!("{job_name}-env")).is_none()
            })
            .await;
        assert!(gone, "Job, Service and Secret go with the resource");
        let _ = meta.client.cancel().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_pool_keeps_the_next_server_pending_until_a_slot_frees() {
    within(LIMIT, async {
        let c = cluster_with_crds().await;
        let meta = kube_meta_with_env(&c, &["--ready-timeout", "25s"], &[]).await;
        let pools: Api<MCPPool> = Api::namespaced(c.fake.client(NS), NS);
        let pool = pool("clocks", json!({"preset": "time", "maxActive": 1, "defaultTtlSeconds": 900}));
        pools.create(&PostParams::default(), &pool).await.unwrap();
        let api = resources(&c);
        api.create(&PostParams::default(), &server("first", json!({"pool": "clocks"}))).await.unwrap();
        status_until(&c, "first", Duration::from_secs(60), |s| phase(s) == "Ready").await;
        api.create(&PostParams::default(), &server("second", json!({"pool": "clocks"}))).await.unwrap();
        let waiting = status_until(&c, "second", Duration::from_secs(20), |s| s["reason"] == "PoolFull").await;
        assert_eq!(phase(&waiting), "Pending", "{waiting}");
        assert!(job_of(&c, "second").is_none(), "no server while the pool is full");
        // The pool's own pass writes its counts, up to 3 s after the server's status.
        pool_until(&c, "clocks", Duration::from_secs(10), |s| (s.active, s.pending) == (1, 1)).await;
        // The pool's defaults filled the unset fields.
        let first = job_of(&c, "first").unwrap();
        assert_eq!(first.spec.unwrap().active_deadline_seconds, Some(900));

        // Stopping the first frees the slot.
        let stop = Patch::Merge(json!({"spec": {"stopped": true}}));
        api.patch("first", &PatchParams::default(), &stop).await.unwrap();
        status_until(&c, "first", Duration::from_secs(30), |s| phase(s) == "Stopped").await;
        status_until(&c, "second", Duration::from_secs(60), |s| phase(s) == "Ready").await;

        // A tool create in the pool counts against its maxActive too, and takes its defaults.
        let refused = call_err(&meta.client, "create_mcp_server", json!({"pool": "clocks"})).await;
        assert!(refused.contains("maxActive of 1"), "{refused}");
        let missing = call_err(&meta.client, "create_mcp_server", json!({"pool": "nope"})).await;
        assert!(missing.contains("no MCPPool named `nope`"), "{missing}");
        api.delete("second", &DeleteParams::background()).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        let made = loop {
            let res = call(&meta.client, "create_mcp_server", json!({"pool": "clocks"})).await;
            if res.is_error != Some(true) {
                break res.structured_content.expect("structured");
            }
            assert!(Instant::now() < deadline, "the freed slot takes a tool create: {}", text(&res));
            tokio::time::sleep(Duration::from_millis(300)).await;
        };
        assert_eq!(made["preset"], "time", "the pool's preset: {made}");
        assert_eq!(made["labels"]["mcp-ephemeral.dev/mcppool"], "clocks", "{made}");
        let job = c.fake.object::<Job>(NS, made["job_name"].as_str().unwrap()).unwrap();
        assert_eq!(job.spec.unwrap().active_deadline_seconds, Some(900), "the pool's default TTL");
        let _ = meta.client.cancel().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopped_suspends_and_resumes_and_delete_mcp_server_deletes_the_resource() {
    within(LIMIT, async {
        let c = cluster_with_crds().await;
        let meta = kube_meta_with_env(&c, &["--ready-timeout", "25s"], &[]).await;
        let api = resources(&c);
        api.create(&PostParams::default(), &server("clock", json!({"preset": "time"}))).await.unwrap();
        let ready = status_until(&c, "clock", Duration::from_secs(60), |s| phase(s) == "Ready").await;
        let job_name = ready["jobName"].as_str().unwrap().to_string();

        api.patch("clock", &PatchParams::default(), &Patch::Merge(json!({"spec": {"stopped": true}}))).await.unwrap();
        status_until(&c, "clock", Duration::from_secs(30), |s| phase(s) == "Stopped").await;
        let job = c.fake.object::<Job>(NS, &job_name).expect("the same Job");
        assert_eq!(job.spec.unwrap().suspend, Some(true), "stopped suspends the Job");
        api.patch("clock", &PatchParams::default(), &Patch::Merge(json!({"spec": {"stopped": false}}))).await.unwrap();
        let again = status_until(&c, "clock", Duration::from_secs(60), |s| phase(s) == "Ready").await;
        assert_eq!(again["jobName"], json!(job_name), "the same server started again, not a new one");

        // A change to the spec replaces the server, and the status says so meanwhile.
        let longer = Patch::Merge(json!({"spec": {"ttlSeconds": 1200}}));
        api.patch("clock", &PatchParams::default(), &longer).await.unwrap();
        let replaced = status_until(&c, "clock", Duration::from_secs(60), |s| {
            phase(s) == "Ready" && s["jobName"] != json!(job_name)
        })
        .await;
        assert!(c.fake.object::<Job>(NS, &job_name).is_none_or(|j| j.metadata.deletion_timestamp.is_some()));
        let job_name = replaced["jobName"].as_str().unwrap().to_string();
        let job = c.fake.object::<Job>(NS, &job_name).expect("the new Job");
        assert_eq!(job.spec.unwrap().active_deadline_seconds, Some(1200), "made from the new spec");

        // A tool's delete of a resource-made server deletes the resource (or it would come back).
        let tool_made = call_ok(&meta.client, "create_mcp_server", json!({"preset": "time"})).await;
        let listed = call_ok(&meta.client, "list_mcp_servers", json!({})).await;
        let source = |job: &str| {
            listed["servers"].as_array().unwrap().iter().find(|s| s["job_name"] == job).map(|s| s["source"].clone())
        };
        assert_eq!(source(tool_made["job_name"].as_str().unwrap()), Some(json!("tool")));
        assert_eq!(source(&job_name), Some(json!("resource")));
        call_ok(&meta.client, "delete_mcp_server", json!({"job_name": job_name, "wait_for_deletion": true})).await;
        let deadline = Instant::now() + Duration::from_secs(10);
        while api.get_opt("clock").await.unwrap().is_some() {
            assert!(Instant::now() < deadline, "the MCPServer is deleted with its server");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert!(job_of(&c, "clock").is_none(), "the controller made no new server for the deleted resource");
        let _ = meta.client.cancel().await;
    })
    .await;
}

/// The Jobs made for resource `name`, not being deleted.
fn jobs_of(c: &Cluster, name: &str) -> usize {
    c.fake
        .objects::<Job>(NS)
        .into_iter()
        .filter(|j| j.metadata.deletion_timestamp.is_none())
        .filter(|j| {
            j.metadata.labels.as_ref().and_then(|l| l.get("mcp-ephemeral.dev/resource")).map(String::as_str)
                == Some(name)
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_two_replicas_only_the_leader_reconciles_and_a_new_leader_takes_over() {
    within(LIMIT, async {
        let c = cluster_with_crds().await;
        let (a, b) = tokio::join!(replica_with(&c, "replica-a", &[]), replica_with(&c, "replica-b", &[]));
        assert!(c.fake.wait_until(Duration::from_secs(15), |f| holder(f).is_some()).await, "someone leads");
        let (leader, follower) = if holds(&c.fake, &a) { (a, b) } else { (b, a) };
        resources(&c).create(&PostParams::default(), &server("one", json!({"preset": "time"}))).await.unwrap();
        status_until(&c, "one", Duration::from_secs(60), |s| phase(s) == "Ready").await;
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(jobs_of(&c, "one"), 1, "one server for the resource, not one per replica");

        unsafe { libc::kill(leader.pid as i32, libc::SIGKILL) };
        let killed = Instant::now();
        let took_over = c.fake.wait_until(Duration::from_secs(15), |f| holds(f, &follower)).await;
        assert!(took_over, "the other replica leads within 15 s: {:?}", holder(&c.fake));
        eprintln!("takeover after {:?}", killed.elapsed());
        resources(&c).create(&PostParams::default(), &server("two", json!({"preset": "time"}))).await.unwrap();
        status_until(&c, "two", Duration::from_secs(60), |s| phase(s) == "Ready").await;
        let one = status_until(&c, "one", Duration::from_secs(30), |s| phase(s) == "Ready").await;
        assert_eq!(jobs_of(&c, "one"), 1, "the new leader kept the first server: {one}");
        assert_eq!(jobs_of(&c, "two"), 1);
        let _ = follower.client.cancel().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_needs_the_kubernetes_runtime_and_only_create_takes_one() {
    within(LIMIT, async {
        let (meta, _) = meta_stdio(&[]).await;
        let local = call_err(&meta, "create_mcp_server", json!({"preset": "time", "pool": "clocks"})).await;
        assert!(local.contains("--runtime kubernetes"), "{local}");
        let discover = call_err(&meta, "discover_mcp_server_tools", json!({"preset": "time", "pool": "clocks"})).await;
        assert!(discover.contains("create_mcp_server only"), "{discover}");
        let _ = meta.cancel().await;
    })
    .await;
}

/// The pool's warm members (not being deleted).
fn warm_members(c: &Cluster, pool: &str) -> Vec<String> {
    c.fake
        .objects::<Job>(NS)
        .into_iter()
        .filter(|j| j.metadata.deletion_timestamp.is_none())
        .filter(|j| {
            j.metadata.labels.as_ref().and_then(|l| l.get("mcp-ephemeral.dev/warm")).map(String::as_str) == Some(pool)
        })
        .filter_map(|j| j.metadata.name)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pools_warm_member_is_handed_to_its_next_server_and_replaced() {
    within(LIMIT, async {
        let c = cluster_with_crds().await;
        let meta = kube_meta_with_env(&c, &["--ready-timeout", "25s", "--metrics-listen", "127.0.0.1:0"], &[]).await;
        let metrics = crate::metrics::metrics_url(&meta.logs).await;
        let pools: Api<MCPPool> = Api::namespaced(c.fake.client(NS), NS);
        let pool = pool("warmed", json!({"preset": "time", "warm": 1, "defaultTtlSeconds": 900}));
        pools.create(&PostParams::default(), &pool).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        let member = loop {
            let ready = pools.get("warmed").await.unwrap().status.is_some_and(|s| s.warm_ready == 1);
            let members = warm_members(&c, "warmed");
            if ready && members.len() == 1 {
                break members[0].clone();
            }
            assert!(Instant::now() < deadline, "the pool has a Ready warm member: {members:?}");
            tokio::time::sleep(Duration::from_millis(300)).await;
        };
        let listed = call_ok(&meta.client, "list_mcp_servers", json!({})).await;
        assert_eq!(listed["servers"].as_array().map(Vec::len), Some(0), "a warm member is nobody's server: {listed}");

        let began = Instant::now();
        resources(&c).create(&PostParams::default(), &server("quick", json!({"pool": "warmed"}))).await.unwrap();
        let status = status_until(&c, "quick", Duration::from_secs(30), |s| phase(s) == "Ready").await;
        eprintln!("MCPServer with a warm member → Ready in {:?}", began.elapsed());
        assert_eq!(status["jobName"], json!(member), "the warm member was handed out: {status}");
        let job = c.fake.object::<Job>(NS, &member).unwrap();
        let resource = resources(&c).get("quick").await.unwrap();
        let owners = job.metadata.owner_references.clone().unwrap_or_default();
        assert!(
            owners.len() == 1
                && owners[0].kind == "MCPServer"
                && Some(&owners[0].uid) == resource.metadata.uid.as_ref(),
            "the member is owned by its MCPServer now: {owners:?}"
        );
        // A resource with its own fields does not fit the members.
        resources(&c)
            .create(&PostParams::default(), &server("own", json!({"pool": "warmed", "ttlSeconds": 300})))
            .await
            .unwrap();
        let own = status_until(&c, "own", Duration::from_secs(60), |s| phase(s) == "Ready").await;
        assert_ne!(own["jobName"], json!(member));
        let refilled = c
            .fake
            .wait_until(Duration::from_secs(60), |_| {
                let members = warm_members(&c, "warmed");
                members.len() == 1 && members[0] != member
            })
            .await;
        assert!(refilled, "a new warm member replaces the one handed out");
        // Both kinds of resource are reconciled, and counted.
        let counted = crate::metrics::scrape(&metrics, None).await.1.expect("metrics on loopback need no token");
        let reconciles = |kind: &str| {
            ["success", "requeued"]
                .iter()
                .map(|o| counted.value("mcp_ephemeral_controller_reconciles_total", &[("kind", kind), ("outcome", o)]))
                .sum::<f64>()
        };
        assert!(reconciles("mcpserver") >= 2.0, "the two MCPServers' passes are counted");
        assert!(reconciles("mcppool") >= 2.0, "the pool's looks are counted");
        // Deleting the pool takes its members (they are owned by it).
        pools.delete("warmed", &DeleteParams::background()).await.unwrap();
        let gone = c.fake.wait_until(Duration::from_secs(20), |_| warm_members(&c, "warmed").is_empty()).await;
        assert!(gone, "the pool's members go with it");
        let _ = meta.client.cancel().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warm_member_is_handed_out_only_within_max_servers() {
    within(LIMIT, async {
        let c = cluster_with_crds().await;
        let meta = kube_meta_with_env(&c, &["--ready-timeout", "25s", "--max-servers", "1"], &[]).await;
        let pools: Api<MCPPool> = Api::namespaced(c.fake.client(NS), NS);
        pools.create(&PostParams::default(), &pool("warmed", json!({"preset": "time", "warm": 1}))).await.unwrap();
        pool_until(&c, "warmed", Duration::from_secs(60), |s| s.warm_ready == 1).await;
        let members = warm_members(&c, "warmed");
        // A hidden member counts against no quota: a tool server takes the one slot.
        call_ok(&meta.client, "create_mcp_server", json!({"preset": "time"})).await;
        resources(&c).create(&PostParams::default(), &server("late", json!({"pool": "warmed"}))).await.unwrap();
        let refused = status_until(&c, "late", Duration::from_secs(30), |s| s["reason"] == "CreateFailed").await;
        assert!(refused["message"].as_str().unwrap_or("").contains("--max-servers limit of 1"), "{refused}");
        assert_eq!(warm_members(&c, "warmed"), members, "the member was not handed out and stays warm");
        let _ = meta.client.cancel().await;
    })
    .await;
}
