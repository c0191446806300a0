//! Each Kubernetes server's NetworkPolicy against the fake API server: made before its Job,
//! owned by it and gone with it; it selects the server's pod and lets in, on the server's port,
//! only the meta server's pods (as deploy/kubernetes labels them) and the client selector's;
//! `egress: "none"` leaves DNS only; `--network-policy off` makes none; bad selectors and egress
//! values are refused. The fake stores and validates policies but filters no traffic, so these
//! tests check what a policy says, not what a network plugin does with it.

use std::{collections::BTreeMap, time::Duration};

use k8s_openapi::{
    api::{
        batch::v1::Job,
        core::v1::Pod,
        networking::v1::{NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort},
    },
    apimachinery::pkg::{apis::meta::v1::LabelSelector, util::intstr::IntOrString},
};
use kube::{
    Api,
    api::{DeleteParams, ListParams, PostParams},
};
use serde_json::{Value, json};

use crate::{
    fake_kube::{FakeConfig, FakeKube},
    kubernetes::{Cluster, cluster, kube_meta_with_env},
    support::*,
};

/// The namespace the kubeconfig of [`cluster`] names.
const NS: &str = "mcp-test";
const LIMIT: Duration = Duration::from_secs(90);
const DEPLOY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/kubernetes");

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// The pod-template labels of the Deployment in `file` of deploy/kubernetes.
fn deployed_pod_labels(file: &str) -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(format!("{DEPLOY}/{file}")).expect("readable manifest");
    let docs: Vec<Value> = serde_saphyr::from_multiple(&text).expect("valid YAML");
    let deployment = docs.iter().find(|d| d["kind"] == "Deployment").expect("a Deployment");
    serde_json::from_value(deployment["spec"]["template"]["metadata"]["labels"].clone()).expect("labels")
}

/// Whether `selector` selects a pod labelled `pod` (matchLabels and the four operators).
fn selects(selector: &LabelSelector, pod: &BTreeMap<String, String>) -> bool {
    let labels_match = selector.match_labels.iter().flatten().all(|(k, v)| pod.get(k) == Some(v));
    let expressions_match = selector.match_expressions.iter().flatten().all(|e| {
        let values = e.values.clone().unwrap_or_default();
        match e.operator.as_str() {
            "In" => pod.get(&e.key).is_some_and(|v| values.contains(v)),
            "NotIn" => pod.get(&e.key).is_none_or(|v| !values.contains(v)),
            "Exists" => pod.contains_key(&e.key),
            "DoesNotExist" => !pod.contains_key(&e.key),
            other => panic!("unknown operator {other}"),
        }
    });
    labels_match && expressions_match
}

/// Whether `peers` let a pod labelled `pod` of the policy's own namespace in.
fn admitted(peers: &[NetworkPolicyPeer], pod: &BTreeMap<String, String>) -> bool {
    peers.iter().any(|p| {
        p.namespace_selector.is_none()
            && p.ip_block.is_none()
            && p.pod_selector.as_ref().is_some_and(|s| selects(s, pod))
    })
}

fn ports(ports: &Option<Vec<NetworkPolicyPort>>) -> Vec<(String, IntOrString)> {
    ports.iter().flatten().map(|p| (p.protocol.clone().unwrap_or_default(), p.port.clone().expect("a port"))).collect()
}

async fn create(meta: &Client, args: Value) -> String {
    let server = call_ok(meta, "create_mcp_server", args).await;
    assert_eq!(server["phase"], "Ready", "{server}");
    server["job_name"].as_str().expect("job_name").to_string()
}

fn policy_of(fake: &FakeKube, job: &str) -> NetworkPolicy {
    fake.object(NS, job).unwrap_or_else(|| panic!("no NetworkPolicy for {job}"))
}

/// The server's policy as the fake stored it: owned by its Job, selecting its pod (and only
/// servers' pods), letting the meta server's deployed pods in on the pod's own port.
fn assert_guards_its_server(c: &Cluster, job: &str) -> NetworkPolicy {
    let policy = policy_of(&c.fake, job);
    let owner: Job = c.fake.object(NS, job).expect("the Job");
    let refs = policy.metadata.owner_references.clone().unwrap_or_default();
    assert!(
        refs.iter().any(|r| r.kind == "Job" && r.name == job && Some(&r.uid) == owner.metadata.uid.as_ref()),
        "the NetworkPolicy is owned by its Job: {refs:?}"
    );
    let spec = policy.spec.clone().expect("spec");
    let selector = spec.pod_selector.clone().expect("podSelector");
    assert_eq!(
        selector.match_labels,
        Some(labels(&[("app.kubernetes.io/managed-by", "mcp-ephemeral"), ("app.kubernetes.io/instance", job)])),
        "it selects the server's pods by the runtime's labels"
    );
    let pods: Vec<Pod> = c.fake.objects(NS);
    let selected: Vec<&Pod> =
        pods.iter().filter(|p| selects(&selector, p.metadata.labels.as_ref().unwrap_or(&BTreeMap::new()))).collect();
    assert_eq!(selected.len(), 1, "it selects exactly the server's pod");
    let container_port = selected[0].spec.as_ref().unwrap().containers[0].ports.as_ref().unwrap()[0].container_port;
    let ingress = spec.ingress.clone().expect("ingress rules");
    assert_eq!(ingress.len(), 1, "one ingress rule: {ingress:?}");
    assert_eq!(
        ports(&ingress[0].ports),
        [("TCP".to_string(), IntOrString::Int(container_port))],
        "the pod's port only"
    );
    assert_eq!(container_port, 8080);
    let from = ingress[0].from.clone().expect("ingress peers: never from everywhere");
    for file in ["deployment.yaml", "sidecar-example.yaml"] {
        assert!(admitted(&from, &deployed_pod_labels(file)), "the meta server's pods of {file} are let in: {from:?}");
    }
    assert!(!admitted(&from, &labels(&[("app", "other")])), "another pod of the namespace is not: {from:?}");
    assert!(
        !admitted(&from, &labels(&[("app.kubernetes.io/name", "mcp-ephemeral")])),
        "the meta server's name alone does not open the door"
    );
    policy
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_has_a_network_policy_owned_by_its_job_that_lets_in_the_meta_server_and_clients() {
    within(LIMIT, async {
        let c = cluster(FakeConfig::new(NS)).await;
        let meta = kube_meta_with_env(&c, &[], &[]).await;
        let job = create(&meta.client, json!({"preset": "time", "wait_for_ready": true})).await;
        let policy = assert_guards_its_server(&c, &job);
        let spec = policy.spec.clone().unwrap();
        assert_eq!(spec.policy_types, Some(vec!["Ingress".to_string()]), "egress stays open by default");
        assert!(spec.egress.is_none());
        let from = spec.ingress.unwrap()[0].from.clone().unwrap();
        assert!(admitted(&from, &labels(&[("mcp-ephemeral.dev/client", "true")])), "the default client selector");
        assert!(!admitted(&from, &labels(&[("mcp-ephemeral.dev/client", "false")])));

        // Made before the Job, so that the pod never runs without it.
        let creates: Vec<String> =
            c.fake.requests().into_iter().filter(|r| r.verb == "create").map(|r| r.resource).collect();
        let at = |what: &str| creates.iter().position(|r| r == what).unwrap_or_else(|| panic!("no {what} create"));
        assert!(at("networkpolicies") < at("jobs"), "the policy comes before the Job: {creates:?}");

        let deleted =
            call_ok(&meta.client, "delete_mcp_server", json!({"job_name": job, "wait_for_deletion": true})).await;
        assert_eq!(deleted["phase"], "Deleted", "{deleted}");
        let gone = c.fake.wait_until(Duration::from_secs(5), |f| f.object::<NetworkPolicy>(NS, &job).is_none()).await;
        assert!(gone, "the NetworkPolicy goes with its server");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_custom_client_selector_is_let_in_and_egress_none_leaves_dns_only() {
    within(LIMIT, async {
        let dir = std::env::temp_dir().join(format!("mcp-eph-np-presets-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("sealed.toml"),
            "name = 'sealed'\ndescription = 'time, offline'\nruntime_exec = 'uvx'\nruntime_mcp = 'mcp-server-time'\negress = 'none'\n",
        )
        .unwrap();
        let c = cluster(FakeConfig::new(NS)).await;
        let extra = ["--client-selector", "team=a,agent", "--presets-dir", dir.to_str().unwrap()];
        let meta = kube_meta_with_env(&c, &extra, &[]).await;

        let dns_only = |policy: &NetworkPolicy| {
            let spec = policy.spec.clone().unwrap();
            let Some(rules) = spec.egress else { return false };
            assert_eq!(spec.policy_types, Some(vec!["Ingress".to_string(), "Egress".to_string()]));
            assert_eq!(rules.len(), 1, "one egress rule: {rules:?}");
            let to = rules[0].to.clone().expect("egress peers: never to everywhere");
            let kube_dns = labels(&[("k8s-app", "kube-dns")]);
            let kube_system = labels(&[("kubernetes.io/metadata.name", "kube-system")]);
            assert_eq!(to.len(), 1);
            assert!(selects(to[0].pod_selector.as_ref().unwrap(), &kube_dns), "{to:?}");
            assert!(selects(to[0].namespace_selector.as_ref().unwrap(), &kube_system), "{to:?}");
            assert!(!selects(to[0].namespace_selector.as_ref().unwrap(), &labels(&[("kubernetes.io/metadata.name", NS)])));
            let dns = [("UDP".to_string(), IntOrString::Int(53)), ("TCP".to_string(), IntOrString::Int(53))];
            assert_eq!(ports(&rules[0].ports), dns, "DNS over UDP and TCP, nothing else");
            true
        };

        let asked = create(&meta.client, json!({"preset": "time", "egress": "none", "wait_for_ready": true})).await;
        let policy = assert_guards_its_server(&c, &asked);
        assert!(dns_only(&policy), "egress none on the request");
        let from = policy.spec.clone().unwrap().ingress.unwrap()[0].from.clone().unwrap();
        assert!(admitted(&from, &labels(&[("team", "a"), ("agent", "")])), "the custom client selector: {from:?}");
        assert!(!admitted(&from, &labels(&[("team", "a")])), "all of it: {from:?}");
        assert!(!admitted(&from, &labels(&[("mcp-ephemeral.dev/client", "true")])), "it replaces the default");

        let from_preset = create(&meta.client, json!({"preset": "sealed", "wait_for_ready": true})).await;
        assert!(dns_only(&policy_of(&c.fake, &from_preset)), "egress = \"none\" in the preset file");
        let reopened =
            create(&meta.client, json!({"preset": "sealed", "egress": "open", "wait_for_ready": true})).await;
        assert!(!dns_only(&policy_of(&c.fake, &reopened)), "the request's egress over the preset's");
        let plain = create(&meta.client, json!({"preset": "time", "wait_for_ready": true})).await;
        assert!(!dns_only(&policy_of(&c.fake, &plain)), "open by default");

        let msg = call_err(&meta.client, "create_mcp_server", json!({"preset": "time", "egress": "closed"})).await;
        assert!(msg.contains("closed") && msg.contains("none"), "{msg}");
        std::fs::remove_dir_all(&dir).ok();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_network_policy_off_no_policy_is_made_and_egress_none_is_refused() {
    within(LIMIT, async {
        let c = cluster(FakeConfig::new(NS)).await;
        let meta = kube_meta_with_env(&c, &["--network-policy", "off"], &[]).await;
        let job = create(&meta.client, json!({"preset": "time", "wait_for_ready": true})).await;
        assert!(c.fake.objects::<NetworkPolicy>(NS).is_empty(), "no NetworkPolicy with --network-policy off");
        assert!(
            !c.fake.requests().iter().any(|r| r.resource == "networkpolicies" && r.verb == "create"),
            "no NetworkPolicy create was even tried"
        );
        let msg = call_err(&meta.client, "create_mcp_server", json!({"preset": "time", "egress": "none"})).await;
        assert!(msg.contains("--network-policy off") && msg.contains("egress"), "{msg}");
        let deleted =
            call_ok(&meta.client, "delete_mcp_server", json!({"job_name": job, "wait_for_deletion": true})).await;
        assert_eq!(deleted["phase"], "Deleted", "{deleted}");
        assert_eq!(c.fake.objects::<Job>(NS).len(), 0, "and the refused one made nothing");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_client_selectors_and_egress_values_are_refused_with_a_clear_sentence() {
    within(LIMIT, async {
        // At startup, before anything connects: one line that names the flag and the fault.
        for (selector, says) in [
            ("a b", "is not `key=value`"),
            ("team=-x", "value `-x`"),
            ("", "empty selector"),
            ("env in (a,b)", "is not `key=value`"),
        ] {
            let out = tokio::process::Command::new(BIN)
                .args(["serve", "--runtime", "kubernetes", "--client-selector", selector])
                .env("KUBECONFIG", "/nonexistent")
                .stdin(std::process::Stdio::null())
                .output()
                .await
                .expect("runs");
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{selector:?}: {stderr}");
            assert!(stderr.contains(&format!("--client-selector `{selector}`")) && stderr.contains(says), "{stderr}");
            assert!(!stderr.contains("Kubernetes configuration"), "refused before connecting: {stderr}");
        }
        let out = tokio::process::Command::new(BIN)
            .args(["serve", "--network-policy", "maybe"])
            .stdin(std::process::Stdio::null())
            .output()
            .await
            .expect("runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && stderr.contains("maybe") && stderr.contains("on"), "{stderr}");

        // A preset file with a bad egress is refused at startup, naming the file.
        let dir = std::env::temp_dir().join(format!("mcp-eph-np-bad-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("leaky.toml"),
            "name = 'leaky'\ndescription = 'x'\nruntime_exec = 'uvx'\negress = 'some'\n",
        )
        .unwrap();
        let out = tokio::process::Command::new(BIN)
            .args(["serve", "--presets-dir", dir.to_str().unwrap()])
            .stdin(std::process::Stdio::null())
            .output()
            .await
            .expect("runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && stderr.contains("leaky.toml") && stderr.contains("some"), "{stderr}");

        // The local runtime cannot keep a process off the network: it says so and starts nothing.
        std::fs::write(
            dir.join("leaky.toml"),
            "name = 'sealed'\ndescription = 'x'\nruntime_exec = 'uvx'\negress = 'none'\n",
        )
        .unwrap();
        let (meta, pid) = meta_stdio(&["--presets-dir", dir.to_str().unwrap()]).await;
        let msg = call_err(&meta, "create_mcp_server", json!({"preset": "time", "egress": "none"})).await;
        assert!(msg.contains("egress") && msg.contains("local runtime"), "{msg}");
        let msg = call_err(&meta, "create_mcp_server", json!({"preset": "sealed"})).await;
        assert!(msg.contains("preset `sealed`") && msg.contains("egress: \"open\""), "{msg}");
        let res = meta
            .call_tool(
                rmcp::model::CallToolRequestParams::new("create_mcp_server")
                    .with_arguments(json!({"preset": "time", "egress": "closed"}).as_object().unwrap().clone()),
            )
            .await;
        match res {
            Ok(r) => assert_eq!(r.is_error, Some(true), "egress \"closed\" was accepted"),
            Err(e) => assert!(e.to_string().contains("closed"), "{e}"),
        }
        let list = call_ok(&meta, "list_mcp_servers", json!({})).await;
        assert_eq!(list["servers"], json!([]), "nothing was created");
        assert!(descendants(pid).is_empty(), "a refused request started a process");
        let _ = meta.cancel().await;
        std::fs::remove_dir_all(&dir).ok();
    })
    .await;
}

/// The fake itself: NetworkPolicies stored, listed by label, validated like the API server,
/// and collected with their owner Job.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fake_stores_lists_validates_and_collects_network_policies_with_their_job() {
    within(LIMIT, async {
        let fake = FakeKube::start(FakeConfig::new(NS)).await;
        let client = fake.client(NS);
        let jobs: Api<Job> = Api::namespaced(client.clone(), NS);
        let policies: Api<NetworkPolicy> = Api::namespaced(client, NS);
        let job: Job = serde_json::from_value(json!({
            "metadata": {"name": "owner"},
            "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "x"}]}}},
        }))
        .unwrap();
        let job = jobs.create(&PostParams::default(), &job).await.expect("a Job");
        let policy = |name: &str, team: &str| -> NetworkPolicy {
            serde_json::from_value(json!({
                "metadata": {"name": name, "labels": {"team": team}, "ownerReferences": [{
                    "apiVersion": "batch/v1", "kind": "Job", "name": "owner",
                    "uid": job.metadata.uid, "controller": true}]},
                "spec": {"podSelector": {"matchLabels": {"app": name}},
                         "ingress": [{"ports": [{"port": 8080}]}],
                         "egress": [{"to": [{"podSelector": {}}]}]},
            }))
            .unwrap()
        };
        let stored = policies.create(&PostParams::default(), &policy("a", "x")).await.expect("a NetworkPolicy");
        let spec = stored.spec.unwrap();
        assert_eq!(spec.policy_types, Some(vec!["Ingress".to_string(), "Egress".to_string()]), "defaulted");
        assert_eq!(spec.ingress.unwrap()[0].ports.as_ref().unwrap()[0].protocol.as_deref(), Some("TCP"), "defaulted");
        policies.create(&PostParams::default(), &policy("b", "y")).await.expect("a second one");
        assert_eq!(policies.get("a").await.expect("get").metadata.name.as_deref(), Some("a"));
        let listed = policies.list(&ListParams::default().labels("team=y")).await.expect("list");
        let names: Vec<String> = listed.items.iter().filter_map(|p| p.metadata.name.clone()).collect();
        assert_eq!(names, ["b"], "listed by label selector");

        for (bad, field) in [
            (json!({"podSelector": {"matchExpressions": [{"key": "k", "operator": "In"}]}}), "spec.podSelector"),
            (json!({"podSelector": {}, "ingress": [{"ports": [{"protocol": "ICMP", "port": 1}]}]}), "protocol"),
            (json!({"podSelector": {}, "egress": [{"ports": [{"port": 0}]}]}), "port"),
            (json!({"podSelector": {}, "ingress": [{"from": [{}]}]}), "must specify a peer"),
            (json!({"podSelector": {}, "policyTypes": ["Sideways"]}), "policyTypes"),
        ] {
            let obj: NetworkPolicy =
                serde_json::from_value(json!({"metadata": {"name": "bad"}, "spec": bad})).expect("typed");
            match policies.create(&PostParams::default(), &obj).await {
                Err(kube::Error::Api(s)) => {
                    assert_eq!(s.code, 422, "{bad}: {}", s.message);
                    assert!(s.message.contains(field), "{bad}: {}", s.message);
                }
                other => panic!("{bad} was accepted: {other:?}"),
            }
        }

        jobs.delete("owner", &DeleteParams::background()).await.expect("delete the Job");
        let collected = fake.wait_until(Duration::from_secs(5), |f| f.objects::<NetworkPolicy>(NS).is_empty()).await;
        assert!(collected, "the garbage collector takes the Job's policies with it");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_answer_leaves_one_policy_and_a_refused_one_leaves_no_server() {
    within(LIMIT, async {
        let c = cluster(FakeConfig::new(NS)).await;
        let meta = kube_meta_with_env(&c, &[], &[]).await;
        let args = json!({"preset": "time", "secret_env": {"K": "v-0123456789"}, "wait_for_ready": true});
        for lost in ["500", "dropped connection", "name taken"] {
            match lost {
                "500" => c.fake.faults().fail_next_after_write("create", "networkpolicies", 1),
                "dropped connection" => c.fake.faults().drop_next_after_write("create", "networkpolicies", 1),
                _ => c.fake.faults().conflict_next_create("networkpolicies"),
            }
            let before = c.fake.objects::<NetworkPolicy>(NS).len();
            let job = create(&meta.client, args.clone()).await;
            assert_guards_its_server(&c, &job);
            assert_eq!(c.fake.objects::<NetworkPolicy>(NS).len(), before + 1, "{lost}: one policy more, no copy");
        }
        let counts = |f: &FakeKube| {
            (f.objects::<Job>(NS).len(), f.objects::<NetworkPolicy>(NS).len(), f.list_json("secrets", Some(NS)).len())
        };
        let before = counts(&c.fake);
        assert_eq!(before.2, before.0, "one Secret per server: none left under a name that was taken");
        c.fake.faults().forbid("create", "networkpolicies");
        let msg = call_err(&meta.client, "create_mcp_server", args.clone()).await;
        assert!(msg.contains("role.yaml"), "a Role without NetworkPolicy rights says what to apply: {msg}");
        assert_eq!(counts(&c.fake), before, "no Job, and the Secret made first is deleted again");
        c.fake.faults().clear();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_sweeps_network_policies_whose_server_is_gone_and_keeps_young_ones() {
    within(LIMIT, async {
        let c = cluster(FakeConfig::new(NS)).await;
        let old =
            humantime::format_rfc3339_seconds(std::time::SystemTime::now() - Duration::from_secs(600)).to_string();
        for name in ["ghost-00000001", "young-00000002"] {
            let labels = json!({"app.kubernetes.io/managed-by": "mcp-ephemeral", "app.kubernetes.io/instance": name});
            c.fake.insert_json(
                "networkpolicies",
                NS,
                json!({"metadata": {"name": name, "namespace": NS, "labels": labels}, "spec": {"podSelector": {}}}),
            );
        }
        c.fake
            .update_json("networkpolicies", NS, "ghost-00000001", |o| o["metadata"]["creationTimestamp"] = json!(old));
        let _meta = kube_meta_with_env(&c, &[], &[]).await;
        let swept = c
            .fake
            .wait_until(Duration::from_secs(10), |f| f.object::<NetworkPolicy>(NS, "ghost-00000001").is_none())
            .await;
        assert!(swept, "an old NetworkPolicy whose Job is gone is deleted");
        assert!(
            c.fake.object::<NetworkPolicy>(NS, "young-00000002").is_some(),
            "a young one may be a create in progress"
        );
    })
    .await;
}
