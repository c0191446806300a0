//! The fake API server's custom resources, checked with the real kube client and kubectl: a CRD
//! registers its kind (discovery, Established), custom resources get the generic verbs with the
//! generation, status-subresource and patch rules of the real server, watches, owner GC of a Job
//! owned by one, finalizers; CRD deletion takes the kind and its objects; Leases conflict on a
//! stale resourceVersion (what leader election relies on).

use std::{path::Path, time::Duration};

use anyhow::Result;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::{
    api::{batch::v1::Job, coordination::v1::Lease, core::v1::Service},
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    Api,
    api::{ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams, PostParams},
    core::WatchEvent,
    runtime::{
        WatchStreamExt,
        wait::{await_condition, conditions},
        watcher,
    },
};
use serde_json::{Value, json};

use crate::fake_kube::{FakeConfig, FakeKube};

const NS: &str = "mcp";
const LIMIT: Duration = Duration::from_secs(3);
const CRD_NAME: &str = "mcpservers.mcp-ephemeral.dev";

/// A small MCPServer-like CRD: namespaced, status subresource, printer columns.
fn crd() -> Value {
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": { "name": CRD_NAME },
        "spec": {
            "group": "mcp-ephemeral.dev",
            "scope": "Namespaced",
            "names": { "plural": "mcpservers", "singular": "mcpserver", "kind": "MCPServer",
                       "listKind": "MCPServerList", "shortNames": ["mcps"] },
            "versions": [{
                "name": "v1alpha1", "served": true, "storage": true,
                "subresources": { "status": {} },
                "schema": { "openAPIV3Schema": { "type": "object", "x-kubernetes-preserve-unknown-fields": true } },
                "additionalPrinterColumns": [
                    { "name": "Phase", "type": "string", "jsonPath": ".status.phase" },
                    { "name": "URL", "type": "string", "jsonPath": ".status.urls.mcp" },
                    { "name": "Tools", "type": "string", "jsonPath": ".status.tools" },
                    { "name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp" },
                ],
            }],
        },
    })
}

fn resource() -> ApiResource {
    let gvk = GroupVersionKind::gvk("mcp-ephemeral.dev", "v1alpha1", "MCPServer");
    ApiResource::from_gvk_with_plural(&gvk, "mcpservers")
}

fn mcpserver(name: &str, data: Value) -> DynamicObject {
    let mut o = DynamicObject::new(name, &resource()).within(NS).data(data);
    o.metadata.labels = Some([("app".to_string(), "mcp".to_string())].into());
    o
}

fn api_status(e: kube::Error) -> Box<kube::core::Status> {
    match e {
        kube::Error::Api(s) => s,
        other => panic!("expected an API error, got {other:?}"),
    }
}

async fn raw_get(fake: &FakeKube, path: &str) -> (u16, Value) {
    let resp = reqwest::get(format!("{}{path}", fake.url())).await.expect("GET");
    let code = resp.status().as_u16();
    (code, resp.json().await.unwrap_or(Value::Null))
}

/// Start a fake, register the CRD through the API and wait until it is established.
async fn start_with_crd() -> Result<(FakeKube, kube::Client, Api<DynamicObject>)> {
    with_crd(FakeKube::start(FakeConfig::new(NS)).await).await
}

/// Register the CRD with `fake` and wait until it is established.
async fn with_crd(fake: FakeKube) -> Result<(FakeKube, kube::Client, Api<DynamicObject>)> {
    let client = fake.client(NS);
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.create(&PostParams::default(), &serde_json::from_value(crd())?).await?;
    tokio::time::timeout(LIMIT, await_condition(crds, CRD_NAME, conditions::is_crd_established())).await??;
    let api = Api::namespaced_with(client.clone(), NS, &resource());
    Ok((fake, client, api))
}

#[tokio::test]
async fn a_created_crd_is_established_served_in_discovery_and_its_deletion_takes_its_objects() -> Result<()> {
    let fake = FakeKube::start(FakeConfig::new(NS)).await;
    let (code, _) = raw_get(&fake, "/apis/mcp-ephemeral.dev").await;
    assert_eq!(code, 404, "no group before its CRD");
    let (fake, client, api) = with_crd(fake).await?;

    let (_, groups) = raw_get(&fake, "/apis").await;
    let group = groups["groups"].as_array().unwrap().iter().find(|g| g["name"] == "mcp-ephemeral.dev").cloned();
    assert_eq!(group.expect("the group is listed")["preferredVersion"]["groupVersion"], "mcp-ephemeral.dev/v1alpha1");
    let (code, g) = raw_get(&fake, "/apis/mcp-ephemeral.dev").await;
    assert_eq!((code, g["kind"].as_str()), (200, Some("APIGroup")));
    let (_, list) = raw_get(&fake, "/apis/mcp-ephemeral.dev/v1alpha1").await;
    let names: Vec<&str> = list["resources"].as_array().unwrap().iter().filter_map(|r| r["name"].as_str()).collect();
    assert_eq!(names, ["mcpservers", "mcpservers/status"]);
    assert_eq!(list["resources"][0]["shortNames"], json!(["mcps"]));
    assert_eq!(list["resources"][0]["namespaced"], true);
    assert_eq!(list["resources"][0]["kind"], "MCPServer");
    // kube's own discovery finds the kind.
    let gvk = GroupVersionKind::gvk("mcp-ephemeral.dev", "v1alpha1", "MCPServer");
    let (ar, caps) = kube::discovery::pinned_kind(&client, &gvk).await?;
    assert_eq!(ar.plural, "mcpservers");
    assert_eq!(caps.scope, kube::discovery::Scope::Namespaced);

    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let stored = crds.get(CRD_NAME).await?;
    let status = stored.status.expect("status");
    assert_eq!(status.accepted_names.expect("accepted names").kind, "MCPServer");
    assert_eq!(status.stored_versions, Some(vec!["v1alpha1".to_string()]));
    assert!(stored.metadata.finalizers.unwrap().contains(&"customresourcecleanup.apiextensions.k8s.io".into()));

    // A CRD whose name is not plural.group is refused.
    let mut bad = crd();
    bad["metadata"]["name"] = json!("servers.mcp-ephemeral.dev");
    let e = api_status(crds.create(&PostParams::default(), &serde_json::from_value(bad)?).await.unwrap_err());
    assert_eq!((e.code, e.reason.as_str()), (422, "Invalid"), "{}", e.message);

    api.create(&PostParams::default(), &mcpserver("one", json!({ "spec": { "preset": "time" } }))).await?;
    crds.delete(CRD_NAME, &DeleteParams::default()).await?;
    let gone = fake.wait_until(LIMIT, |f| f.get_json("customresourcedefinitions", "", CRD_NAME).is_none()).await;
    assert!(gone, "the CRD goes once its objects have");
    assert_eq!(raw_get(&fake, "/apis/mcp-ephemeral.dev").await.0, 404);
    assert_eq!(raw_get(&fake, "/apis/mcp-ephemeral.dev/v1alpha1/namespaces/mcp/mcpservers/one").await.0, 404);
    let (_, groups) = raw_get(&fake, "/apis").await;
    assert!(!groups["groups"].as_array().unwrap().iter().any(|g| g["name"] == "mcp-ephemeral.dev"));
    // Registering it again starts empty.
    crds.create(&PostParams::default(), &serde_json::from_value(crd())?).await?;
    assert!(api.list(&ListParams::default()).await?.items.is_empty());
    Ok(())
}

#[tokio::test]
async fn custom_resources_follow_the_generation_status_and_patch_rules_of_the_api_server() -> Result<()> {
    let (fake, _client, api) = start_with_crd().await?;
    let mut events = api.watch(&kube::api::WatchParams::default().labels("app=mcp"), "0").await?.boxed();

    let created = api
        .create(
            &PostParams::default(),
            &mcpserver(
                "demo",
                json!({
                    "spec": { "preset": "time", "extra": { "unknown": [1, 2] } },
                    "status": { "phase": "Forged" },
                }),
            ),
        )
        .await?;
    let m = &created.metadata;
    assert_eq!(m.generation, Some(1));
    assert!(m.uid.is_some() && m.resource_version.is_some() && m.creation_timestamp.is_some());
    assert_eq!(created.data["spec"]["extra"]["unknown"], json!([1, 2]), "unknown fields are kept, not pruned");
    assert!(created.data.get("status").is_none(), "a create cannot set a status subresource");
    let mut other = mcpserver("other", json!({ "spec": { "preset": "fetch" } }));
    other.metadata.labels = Some([("app".to_string(), "else".to_string())].into());
    api.create(&PostParams::default(), &other).await?;

    let listed = api.list(&ListParams::default().labels("app=mcp")).await?;
    assert_eq!(listed.items.iter().map(|o| o.metadata.name.clone().unwrap()).collect::<Vec<_>>(), ["demo"]);
    assert_eq!(api.list(&ListParams::default()).await?.items.len(), 2);
    let (_, raw) = raw_get(&fake, &format!("/apis/mcp-ephemeral.dev/v1alpha1/namespaces/{NS}/mcpservers")).await;
    assert_eq!((raw["kind"].as_str(), raw["items"][0]["kind"].as_str()), (Some("MCPServerList"), Some("MCPServer")));

    let pp = PatchParams::default();
    let o = api.patch("demo", &pp, &Patch::Merge(json!({ "spec": { "preset": "git" } }))).await?;
    assert_eq!(o.metadata.generation, Some(2), "a spec change is a new generation");
    let o = api.patch("demo", &pp, &Patch::Merge(json!({ "metadata": { "annotations": { "a": "b" } } }))).await?;
    assert_eq!(o.metadata.generation, Some(2), "a metadata change is not");
    // kube is built without its jsonpatch feature: a JSON patch over plain HTTP.
    let resp = reqwest::Client::new()
        .patch(format!("{}/apis/mcp-ephemeral.dev/v1alpha1/namespaces/{NS}/mcpservers/demo", fake.url()))
        .header("content-type", "application/json-patch+json")
        .body(json!([{ "op": "replace", "path": "/spec/preset", "value": "fetch" }]).to_string())
        .send()
        .await?;
    assert_eq!(resp.status().as_u16(), 200);
    let o: Value = resp.json().await?;
    assert_eq!((o["spec"]["preset"].as_str(), o["metadata"]["generation"].as_i64()), (Some("fetch"), Some(3)));

    // Status only through /status, and /status changes only the status.
    let o = api
        .patch_status(
            "demo",
            &pp,
            &Patch::Merge(json!({ "spec": { "preset": "ignored" }, "status": { "phase": "Ready", "tools": ["now"] } })),
        )
        .await?;
    assert_eq!(o.data["status"]["phase"], "Ready");
    assert_eq!((o.data["spec"]["preset"].as_str(), o.metadata.generation), (Some("fetch"), Some(3)));
    let o = api.patch("demo", &pp, &Patch::Merge(json!({ "status": { "phase": "Failed" } }))).await?;
    assert_eq!(o.data["status"]["phase"], "Ready", "the main endpoint ignores .status");

    // Optimistic concurrency, and no strategic merge for custom resources (415, as the server).
    let mut stale = created.clone();
    stale.data["spec"]["preset"] = json!("stale");
    let e = api_status(api.replace("demo", &PostParams::default(), &stale).await.unwrap_err());
    assert_eq!((e.code, e.reason.as_str()), (409, "Conflict"));
    let e = api_status(api.patch("demo", &pp, &Patch::Strategic(json!({ "spec": {} }))).await.unwrap_err());
    assert_eq!((e.code, e.reason.as_str()), (415, "UnsupportedMediaType"));
    let mut fresh = api.get("demo").await?;
    fresh.data["spec"]["preset"] = json!("time");
    let o = api.replace("demo", &PostParams::default(), &fresh).await?;
    assert_eq!((o.metadata.generation, &o.data["status"]["phase"]), (Some(4), &json!("Ready")));

    // The watch (label selector) saw this object's life, and not the other's.
    let mut seen = Vec::new();
    while seen.len() < 6 {
        match tokio::time::timeout(LIMIT, events.try_next()).await?? {
            Some(WatchEvent::Added(o)) => seen.push(format!("ADDED {}", o.metadata.name.unwrap())),
            Some(WatchEvent::Modified(o)) => {
                seen.push(format!("MODIFIED {}", o.data["status"]["phase"].as_str().unwrap_or("-")))
            }
            Some(WatchEvent::Deleted(o)) => seen.push(format!("DELETED {}", o.metadata.name.unwrap())),
            Some(other) => panic!("unexpected {other:?}"),
            None => break,
        }
    }
    assert_eq!(seen, ["ADDED demo", "MODIFIED -", "MODIFIED -", "MODIFIED -", "MODIFIED Ready", "MODIFIED Ready"]);

    // kube's watcher (list then watch) over the custom kind, through a delete.
    let stream = watcher(api.clone(), watcher::Config::default().labels("app=mcp")).touched_objects();
    let mut stream = stream.boxed();
    let first = tokio::time::timeout(LIMIT, stream.try_next()).await??.expect("an object");
    assert_eq!(first.metadata.name.as_deref(), Some("demo"));
    api.delete("demo", &DeleteParams::default()).await?;
    let last = tokio::time::timeout(LIMIT, stream.try_next()).await??.expect("the deletion");
    assert_eq!(last.metadata.name.as_deref(), Some("demo"));
    assert!(fake.get_json("mcpservers", NS, "demo").is_none());
    Ok(())
}

#[tokio::test]
async fn a_job_owned_by_a_custom_resource_goes_with_it_once_its_finalizer_is_removed() -> Result<()> {
    let (fake, client, api) = start_with_crd().await?;
    let mut server = mcpserver("owner", json!({ "spec": { "preset": "time" } }));
    server.metadata.finalizers = Some(vec!["mcp-ephemeral.dev/cleanup".into()]);
    let server = api.create(&PostParams::default(), &server).await?;
    let owner_ref = json!([{
        "apiVersion": "mcp-ephemeral.dev/v1alpha1", "kind": "MCPServer", "name": "owner",
        "uid": server.metadata.uid, "controller": true, "blockOwnerDeletion": true,
    }]);
    let jobs: Api<Job> = Api::namespaced(client.clone(), NS);
    let job: Job = serde_json::from_value(json!({
        "metadata": { "name": "owner-job", "ownerReferences": owner_ref },
        "spec": { "backoffLimit": 0, "template": { "spec": { "restartPolicy": "Never",
            "containers": [{ "name": "mcp", "image": "ghcr.io/acme/mcp:1" }] } } },
    }))?;
    let job = jobs.create(&PostParams::default(), &job).await?;
    let services: Api<Service> = Api::namespaced(client.clone(), NS);
    let service: Service = serde_json::from_value(json!({
        "metadata": { "name": "owner-svc", "ownerReferences": [{
            "apiVersion": "batch/v1", "kind": "Job", "name": "owner-job", "uid": job.metadata.uid }] },
        "spec": { "ports": [{ "port": 8080 }] },
    }))?;
    services.create(&PostParams::default(), &service).await?;
    let has_pod =
        |f: &FakeKube| f.list_json("pods", Some(NS)).iter().any(|p| p["metadata"]["labels"]["job-name"] == "owner-job");
    assert!(fake.wait_until(LIMIT, has_pod).await, "the Job runs a pod");

    // The finalizer holds the resource, and so its Job.
    api.delete("owner", &DeleteParams::default()).await?;
    let held = api.get("owner").await?;
    assert!(held.metadata.deletion_timestamp.is_some());
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(fake.get_json("jobs", NS, "owner-job").is_some(), "the owner still exists");
    let e = api_status(api.create(&PostParams::default(), &mcpserver("owner", json!({}))).await.unwrap_err());
    assert_eq!(e.code, 409);

    api.patch("owner", &PatchParams::default(), &Patch::Merge(json!({ "metadata": { "finalizers": null } }))).await?;
    let collected = fake
        .wait_until(LIMIT, |f| {
            f.get_json("mcpservers", NS, "owner").is_none()
                && f.get_json("jobs", NS, "owner-job").is_none()
                && f.get_json("services", NS, "owner-svc").is_none()
                && !has_pod(f)
        })
        .await;
    assert!(collected, "the resource, its Job, the Job's Service and pod are all gone");
    Ok(())
}

#[tokio::test]
async fn a_lease_write_with_a_stale_resource_version_is_a_conflict() -> Result<()> {
    let fake = FakeKube::start(FakeConfig::new(NS)).await;
    let leases: Api<Lease> = Api::namespaced(fake.client(NS), NS);
    let lease: Lease = serde_json::from_value(json!({
        "metadata": { "name": "leader" },
        "spec": { "holderIdentity": "a", "leaseDurationSeconds": 15 },
    }))?;
    let created = leases.create(&PostParams::default(), &lease).await?;
    let e = api_status(leases.create(&PostParams::default(), &lease).await.unwrap_err());
    assert_eq!((e.code, e.reason.as_str()), (409, "AlreadyExists"));

    // Two candidates read the same version; the first write wins, the second is a conflict.
    let mut by_a = leases.get("leader").await?;
    let mut by_b = by_a.clone();
    by_a.spec.as_mut().unwrap().lease_transitions = Some(1);
    let renewed = leases.replace("leader", &PostParams::default(), &by_a).await?;
    assert_ne!(renewed.metadata.resource_version, created.metadata.resource_version);
    by_b.spec.as_mut().unwrap().holder_identity = Some("b".into());
    let e = api_status(leases.replace("leader", &PostParams::default(), &by_b).await.unwrap_err());
    assert_eq!((e.code, e.reason.as_str()), (409, "Conflict"), "{}", e.message);
    assert_eq!(e.details.map(|d| d.group), Some("coordination.k8s.io".to_string()));

    // A merge patch carrying a stale resourceVersion conflicts too; a current one goes through.
    let stale = json!({ "metadata": { "resourceVersion": created.metadata.resource_version },
                        "spec": { "holderIdentity": "b" } });
    let e = api_status(leases.patch("leader", &PatchParams::default(), &Patch::Merge(stale)).await.unwrap_err());
    assert_eq!(e.code, 409);
    let current = json!({ "metadata": { "resourceVersion": renewed.metadata.resource_version },
                          "spec": { "holderIdentity": "b" } });
    let taken = leases.patch("leader", &PatchParams::default(), &Patch::Merge(current)).await?;
    let spec = taken.spec.unwrap();
    assert_eq!((spec.holder_identity.as_deref(), spec.lease_transitions), (Some("b"), Some(1)));
    assert_eq!(fake.list_json("leases", Some(NS)).len(), 1);
    Ok(())
}

pub(crate) fn kubectl(dir: &Path, kubeconfig: &Path, args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .arg("--cache-dir")
        .arg(dir.join("cache"))
        .args(args)
        .output()
        .expect("run kubectl");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

const SERVER_YAML: &str = "apiVersion: mcp-ephemeral.dev/v1alpha1
kind: MCPServer
metadata:
  name: demo
  namespace: mcp
spec:
  preset: time
  idleTimeoutSeconds: 300
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_applies_the_crd_and_an_mcpserver_and_gets_it_with_its_printer_columns() -> Result<()> {
    let found = std::process::Command::new("kubectl").args(["version", "--client"]).output();
    assert!(
        found.is_ok_and(|o| o.status.success()),
        "kubectl is not on PATH: install it (bash .ci/run --setup-only does)"
    );
    let fake = FakeKube::start(FakeConfig::new(NS)).await;
    let dir = std::env::temp_dir().join(format!("fake-kube-crds-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let kubeconfig = fake.write_kubeconfig(&dir, NS);
    std::fs::write(dir.join("crd.json"), serde_json::to_string_pretty(&crd())?)?;
    std::fs::write(dir.join("server.yaml"), SERVER_YAML)?;
    let d = dir.clone();
    let k = kubeconfig.clone();
    let run = move |args: Vec<String>| {
        let (d, k) = (d.clone(), k.clone());
        async move {
            tokio::task::spawn_blocking(move || kubectl(&d, &k, &args.iter().map(String::as_str).collect::<Vec<_>>()))
                .await
                .expect("kubectl")
        }
    };
    let file = |name: &str| dir.join(name).to_string_lossy().into_owned();
    let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();

    let (ok, out) = run(args(&["apply", "--validate=false", "-f", &file("crd.json")])).await;
    assert!(
        ok && out.contains("customresourcedefinition.apiextensions.k8s.io/mcpservers.mcp-ephemeral.dev created"),
        "{out}"
    );
    let (ok, out) =
        run(args(&["wait", "--for", "condition=established", "--timeout=10s", "crd/mcpservers.mcp-ephemeral.dev"]))
            .await;
    assert!(ok && out.contains("condition met"), "{out}");
    // kubectl's discovery cache predates the group: it must find it anyway.
    let (ok, out) = run(args(&["apply", "--validate=false", "-f", &file("server.yaml")])).await;
    assert!(ok && out.contains("mcpserver.mcp-ephemeral.dev/demo created"), "{out}");
    let stored = fake.get_json("mcpservers", NS, "demo").expect("stored");
    assert_eq!(stored["spec"]["idleTimeoutSeconds"], 300);

    // A controller writes the status; kubectl get prints the printer columns.
    let api: Api<DynamicObject> = Api::namespaced_with(fake.client(NS), NS, &resource());
    let status =
        json!({ "status": { "phase": "Ready", "urls": { "mcp": "http://demo/mcp" }, "tools": ["get_current_time"] } });
    api.patch_status("demo", &PatchParams::default(), &Patch::Merge(status)).await?;
    for what in ["mcpservers", "mcps", "mcpserver.mcp-ephemeral.dev/demo"] {
        let (ok, out) = run(args(&["get", what])).await;
        assert!(ok, "{out}");
        let lines: Vec<Vec<&str>> = out.lines().map(|l| l.split_whitespace().collect()).collect();
        assert_eq!(lines[0], ["NAME", "PHASE", "URL", "TOOLS", "AGE"], "{out}");
        assert_eq!(lines[1][..4], ["demo", "Ready", "http://demo/mcp", "[\"get_current_time\"]"], "{out}");
        assert!(lines[1][4].ends_with('s'), "an age: {out}");
    }
    let (ok, out) = run(args(&["get", "mcpservers", "-o", "jsonpath={.items[0].status.phase}"])).await;
    assert!(ok && out == "Ready", "{out}");

    // Applying a change patches it (a merge patch: kubectl knows custom resources have no
    // strategic one), a spec change that is a new generation.
    std::fs::write(dir.join("server.yaml"), SERVER_YAML.replace("300", "600"))?;
    let (ok, out) = run(args(&["apply", "--validate=false", "-f", &file("server.yaml")])).await;
    assert!(ok && out.contains("mcpserver.mcp-ephemeral.dev/demo configured"), "{out}");
    let stored = fake.get_json("mcpservers", NS, "demo").expect("stored");
    assert_eq!(
        (stored["spec"]["idleTimeoutSeconds"].as_i64(), stored["metadata"]["generation"].as_i64()),
        (Some(600), Some(2))
    );
    assert_eq!(stored["status"]["phase"], "Ready");
    let patches: Vec<_> = fake.requests().into_iter().filter(|r| r.verb == "patch").collect();
    assert!(patches.iter().all(|r| r.status == 200), "{patches:?}");

    let (ok, out) = run(args(&["delete", "-f", &file("server.yaml")])).await;
    assert!(ok && out.contains("deleted"), "{out}");
    let (ok, out) = run(args(&["get", "mcpservers"])).await;
    assert!(ok && out.contains("No resources found"), "{out}");
    let (ok, out) = run(args(&["delete", "-f", &file("crd.json")])).await;
    assert!(ok && out.contains("deleted"), "{out}");
    let (ok, out) = run(args(&["get", "mcpservers"])).await;
    let unknown = out.contains("doesn't have a resource type") || out.contains("could not find the requested resource");
    assert!(!ok && unknown, "{out}");
    std::fs::remove_dir_all(&dir).ok();
    Ok(())
}
