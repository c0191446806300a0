//! deploy/kubernetes/: the Role grants exactly what the runtime uses, the meta server runs locked
//! down with its token from a Secret, every manifest matches its Kubernetes API type, and kubectl
//! accepts them.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::Command,
};

use k8s_openapi::api::{
    apps::v1::Deployment,
    core::v1::{Namespace, Service, ServiceAccount},
    policy::v1::PodDisruptionBudget,
    rbac::v1::{Role, RoleBinding},
};
use mcp_ephemeral::runtime::kubernetes::rbac::API_ACCESS;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::fake_kube::{FakeConfig, FakeKube};

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/kubernetes");
const NAMESPACE: &str = "mcp-ephemeral";
const SERVICE_ACCOUNT: &str = "mcp-ephemeral";
const TOKEN_SECRET: &str = "mcp-ephemeral-token";
/// Not part of the install (kustomization.yaml leaves it out), but it must be valid too.
const EXAMPLE: &str = "sidecar-example.yaml";

/// One YAML document of one file.
struct Doc {
    file: String,
    value: Value,
}

impl Doc {
    fn kind(&self) -> &str {
        self.value["kind"].as_str().unwrap_or_default()
    }

    fn name(&self) -> &str {
        self.value["metadata"]["name"].as_str().unwrap_or_default()
    }

    fn namespace(&self) -> &str {
        self.value["metadata"]["namespace"].as_str().unwrap_or_default()
    }
}

fn yaml_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(DIR)
        .expect("deploy/kubernetes/ exists")
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    files.sort();
    assert!(files.len() >= 8, "expected the manifests in {DIR}, found {files:?}");
    files
}

fn file_name(path: &Path) -> String {
    path.file_name().expect("file name").to_string_lossy().into_owned()
}

/// Every document of every `deploy/kubernetes/*.yaml` (multi-document files allowed).
fn docs() -> Vec<Doc> {
    let mut docs = Vec::new();
    for path in yaml_files() {
        let text = std::fs::read_to_string(&path).expect("readable manifest");
        let values: Vec<Value> =
            serde_saphyr::from_multiple(&text).unwrap_or_else(|e| panic!("{} is not valid YAML: {e}", path.display()));
        assert!(!values.is_empty(), "{} holds no document", path.display());
        docs.extend(values.into_iter().map(|value| Doc { file: file_name(&path), value }));
    }
    docs
}

/// The one document of `kind` named `name` outside the example.
fn the<'a>(docs: &'a [Doc], kind: &str, name: &str) -> &'a Doc {
    let found: Vec<&Doc> = docs.iter().filter(|d| d.file != EXAMPLE && d.kind() == kind && d.name() == name).collect();
    assert_eq!(found.len(), 1, "expected exactly one {kind} {name:?} in the install, found {}", found.len());
    found[0]
}

fn strings(v: &Value) -> Vec<&str> {
    v.as_array().map(|a| a.iter().map(|s| s.as_str().expect("a string")).collect()).unwrap_or_default()
}

fn pod_spec(deployment: &Doc) -> &Value {
    &deployment.value["spec"]["template"]["spec"]
}

/// Every container of a pod, sidecars in `initContainers` included.
fn containers(pod: &Value) -> Vec<&Value> {
    ["initContainers", "containers"].iter().filter_map(|k| pod[*k].as_array()).flatten().collect()
}

fn container<'a>(pod: &'a Value, name: &str) -> &'a Value {
    containers(pod).into_iter().find(|c| c["name"] == name).unwrap_or_else(|| panic!("no container {name:?}"))
}

/// Whether `args` holds `flag value` or `flag=value`.
fn has_flag(args: &[&str], flag: &str, value: &str) -> bool {
    args.windows(2).any(|w| w[0] == flag && w[1] == value) || args.contains(&format!("{flag}={value}").as_str())
}

fn flag_value<'a>(args: &[&'a str], flag: &str) -> Option<&'a str> {
    args.windows(2).find(|w| w[0] == flag).map(|w| w[1])
}

#[test]
fn the_role_grants_exactly_what_the_runtime_uses_and_nothing_cluster_wide() {
    let docs = docs();
    for d in &docs {
        assert!(
            !matches!(d.kind(), "ClusterRole" | "ClusterRoleBinding"),
            "{} has a {} {:?}: the runtime needs nothing cluster-wide",
            d.file,
            d.kind(),
            d.name()
        );
    }
    let roles: Vec<&Doc> = docs.iter().filter(|d| d.kind() == "Role").collect();
    assert_eq!(roles.len(), 1, "expected one Role in deploy/kubernetes/");
    let role = roles[0];
    assert_eq!(role.namespace(), NAMESPACE, "the Role's namespace");

    let mut granted = BTreeSet::new();
    for rule in role.value["rules"].as_array().expect("the Role has rules") {
        for key in ["nonResourceURLs", "resourceNames"] {
            assert!(rule.get(key).is_none(), "rule {rule} uses {key}, which API_ACCESS does not");
        }
        for group in strings(&rule["apiGroups"]) {
            for resource in strings(&rule["resources"]) {
                for verb in strings(&rule["verbs"]) {
                    assert!(
                        ![group, resource, verb].contains(&"*"),
                        "rule {rule} uses a wildcard: grant each access by name"
                    );
                    granted.insert((group.to_string(), resource.to_string(), verb.to_string()));
                }
            }
        }
    }
    let needed: BTreeSet<(String, String, String)> = API_ACCESS
        .iter()
        .flat_map(|a| a.verbs.iter().map(|v| (a.group.to_string(), a.resource.to_string(), v.to_string())))
        .collect();
    let missing: Vec<_> = needed.difference(&granted).collect();
    let extra: Vec<_> = granted.difference(&needed).collect();
    assert!(missing.is_empty(), "role.yaml lacks what the runtime uses (rbac.rs API_ACCESS): {missing:?}");
    assert!(extra.is_empty(), "role.yaml grants what the runtime never uses (not in rbac.rs API_ACCESS): {extra:?}");

    let account = the(&docs, "ServiceAccount", SERVICE_ACCOUNT);
    assert_eq!(account.namespace(), NAMESPACE, "the ServiceAccount's namespace");
    let bindings: Vec<&Doc> = docs.iter().filter(|d| d.kind() == "RoleBinding").collect();
    assert_eq!(bindings.len(), 1, "expected one RoleBinding");
    let binding = &bindings[0].value;
    assert_eq!(bindings[0].namespace(), NAMESPACE, "the RoleBinding's namespace");
    assert_eq!(binding["roleRef"]["apiGroup"], "rbac.authorization.k8s.io");
    assert_eq!(binding["roleRef"]["kind"], "Role");
    assert_eq!(binding["roleRef"]["name"], role.name());
    let subjects = binding["subjects"].as_array().expect("the RoleBinding has subjects");
    assert_eq!(subjects.len(), 1, "the Role is bound to the ServiceAccount alone: {subjects:?}");
    assert_eq!(subjects[0]["kind"], "ServiceAccount");
    assert_eq!(subjects[0]["name"], SERVICE_ACCOUNT);
    assert_eq!(subjects[0]["namespace"], NAMESPACE);
}

#[test]
fn the_meta_server_runs_as_its_service_account_non_root_read_only_with_health_probes() {
    let docs = docs();
    let namespace = the(&docs, "Namespace", NAMESPACE);
    assert_eq!(namespace.file, "namespace.yaml");
    let deployment = the(&docs, "Deployment", "mcp-ephemeral");
    assert_eq!(deployment.namespace(), NAMESPACE);
    // Two replicas with a leader: rolled one at a time, never below one serving.
    assert_eq!(deployment.value["spec"]["replicas"], 2);
    let strategy = &deployment.value["spec"]["strategy"];
    assert_eq!(strategy["type"], "RollingUpdate");
    assert_eq!(strategy["rollingUpdate"]["maxUnavailable"], 0);
    assert_eq!(strategy["rollingUpdate"]["maxSurge"], 1);
    let pdb = the(&docs, "PodDisruptionBudget", "mcp-ephemeral");
    assert_eq!((pdb.file.as_str(), pdb.namespace()), ("pdb.yaml", NAMESPACE));
    assert_eq!(pdb.value["spec"]["minAvailable"], 1);
    assert_eq!(
        pdb.value["spec"]["selector"]["matchLabels"], deployment.value["spec"]["selector"]["matchLabels"],
        "the PodDisruptionBudget covers the meta server's pods"
    );
    let pod = pod_spec(deployment);
    assert_eq!(pod["serviceAccountName"], SERVICE_ACCOUNT);
    assert_eq!(pod["automountServiceAccountToken"], true, "the runtime needs the API server");

    let c = container(pod, "mcp-ephemeral");
    assert_restricted(pod, c);
    for probe in ["livenessProbe", "readinessProbe"] {
        let get = &c[probe]["httpGet"];
        assert_eq!(get["path"], "/healthz", "{probe}");
        assert_eq!(get["port"], 8080, "{probe}");
    }
    assert_eq!(c["ports"][0]["containerPort"], 8080);
    for kind in ["requests", "limits"] {
        for resource in ["cpu", "memory"] {
            assert!(c["resources"][kind][resource].is_string(), "resources.{kind}.{resource} is set");
        }
    }

    let service = the(&docs, "Service", "mcp-ephemeral");
    assert_eq!(service.value["spec"]["type"], "ClusterIP");
    assert_eq!(service.value["spec"]["ports"][0]["port"], 8080);
    let labels = &deployment.value["spec"]["template"]["metadata"]["labels"];
    for (k, v) in service.value["spec"]["selector"].as_object().expect("the Service has a selector") {
        assert_eq!(&labels[k], v, "the Service selects the meta server's pods by {k}");
    }
}

/// The fields of the `restricted` Pod Security Standard, from the container or else the pod.
fn assert_restricted(pod: &Value, c: &Value) {
    let name = &c["name"];
    let field = |key: &str| {
        let own = &c["securityContext"][key];
        if own.is_null() { pod["securityContext"][key].clone() } else { own.clone() }
    };
    assert_eq!(field("runAsNonRoot"), true, "{name}: runAsNonRoot");
    assert_eq!(field("runAsUser"), 10001, "{name}: runAsUser (the image's USER)");
    assert_eq!(field("seccompProfile")["type"], "RuntimeDefault", "{name}: seccompProfile");
    let sc = &c["securityContext"];
    assert_eq!(sc["allowPrivilegeEscalation"], false, "{name}: allowPrivilegeEscalation");
    assert_eq!(sc["readOnlyRootFilesystem"], true, "{name}: readOnlyRootFilesystem");
    assert_eq!(strings(&sc["capabilities"]["drop"]), ["ALL"], "{name}: capabilities.drop");
    assert!(sc["capabilities"]["add"].is_null(), "{name}: no capabilities added");
    let tmp = c["volumeMounts"]
        .as_array()
        .and_then(|m| m.iter().find(|m| m["mountPath"] == "/tmp"))
        .unwrap_or_else(|| panic!("{name}: a volume at /tmp, the one writable place"));
    let volume = pod["volumes"]
        .as_array()
        .and_then(|v| v.iter().find(|v| v["name"] == tmp["name"]))
        .expect("the /tmp volume is declared");
    assert!(volume["emptyDir"].is_object(), "{name}: /tmp is an emptyDir");
}

#[test]
fn the_token_comes_from_a_secret_and_no_manifest_holds_one() {
    let docs = docs();
    let deployment = the(&docs, "Deployment", "mcp-ephemeral");
    let c = container(pod_spec(deployment), "mcp-ephemeral");
    let env = c["env"].as_array().expect("env");
    let token = env.iter().find(|e| e["name"] == "MCP_EPHEMERAL_TOKEN").expect("MCP_EPHEMERAL_TOKEN is set");
    assert!(token.get("value").is_none(), "MCP_EPHEMERAL_TOKEN has a literal value");
    assert_eq!(token["valueFrom"]["secretKeyRef"]["name"], TOKEN_SECRET);
    assert_eq!(token["valueFrom"]["secretKeyRef"]["key"], "token");

    for d in &docs {
        assert_ne!(d.kind(), "Secret", "{}: the token Secret is made by hand, never shipped", d.file);
        for pod in [&d.value["spec"]["template"]["spec"], &d.value["spec"]] {
            for c in containers(pod) {
                let args = strings(&c["args"]);
                assert!(
                    !args.iter().any(|a| a.starts_with("--auth-token")),
                    "{}: --auth-token on a command line",
                    d.file
                );
                for e in c["env"].as_array().into_iter().flatten() {
                    let name = e["name"].as_str().unwrap_or_default();
                    assert!(
                        !(name.contains("TOKEN") && e.get("value").is_some()),
                        "{}: {name} has a literal value",
                        d.file
                    );
                }
            }
        }
    }
    // Nothing that looks like a generated secret (`openssl rand -hex`) in any file.
    for path in yaml_files() {
        let text = std::fs::read_to_string(&path).expect("readable");
        let longest = text.split(|ch: char| !ch.is_ascii_hexdigit()).map(str::len).max().unwrap_or(0);
        assert!(longest < 24, "{} holds a run of {longest} hex digits: a token?", path.display());
    }
}

#[test]
fn the_meta_server_serves_http_with_the_kubernetes_runtime() {
    let docs = docs();
    let deployment = the(&docs, "Deployment", "mcp-ephemeral");
    let c = container(pod_spec(deployment), "mcp-ephemeral");
    let args = strings(&c["args"]);
    assert_eq!(args.first(), Some(&"serve"), "args: {args:?}");
    assert!(has_flag(&args, "--runtime", "kubernetes"), "args mention --runtime kubernetes: {args:?}");
    assert!(has_flag(&args, "--transport", "http"), "args: {args:?}");
    assert!(has_flag(&args, "--listen", "0.0.0.0:8080"), "args: {args:?}");
    if let Some(image) = flag_value(&args, "--server-image") {
        assert_eq!(c["image"], image, "spawned servers use the meta server's own image");
    }

    // The sidecar example: the same runtime, on the pod's loopback, with the same account.
    let example: Vec<&Doc> = docs.iter().filter(|d| d.file == EXAMPLE && d.kind() == "Deployment").collect();
    assert_eq!(example.len(), 1, "{EXAMPLE} holds one Deployment");
    let pod = pod_spec(example[0]);
    assert_eq!(pod["serviceAccountName"], SERVICE_ACCOUNT);
    let sidecar = container(pod, "mcp-ephemeral");
    let args = strings(&sidecar["args"]);
    assert!(has_flag(&args, "--runtime", "kubernetes"), "sidecar args: {args:?}");
    assert!(has_flag(&args, "--listen", "127.0.0.1:8080"), "sidecar args: {args:?}");
    assert_restricted(pod, sidecar);
}

#[test]
fn kustomization_lists_every_manifest_but_the_example() {
    let docs = docs();
    let kustomization = docs.iter().find(|d| d.file == "kustomization.yaml").expect("kustomization.yaml");
    let listed: BTreeSet<&str> = strings(&kustomization.value["resources"]).into_iter().collect();
    let files: Vec<String> = yaml_files().iter().map(|p| file_name(p)).collect();
    let expected: BTreeSet<&str> =
        files.iter().map(String::as_str).filter(|f| *f != "kustomization.yaml" && *f != EXAMPLE).collect();
    assert_eq!(listed, expected);
}

/// Parse `value` as the API type `T` and serialize it back: a misspelt or misplaced field is
/// dropped on the way (k8s-openapi ignores unknown fields) and the comparison shows it.
fn round_trip<T: DeserializeOwned + serde::Serialize>(value: &Value) -> Result<Value, String> {
    let typed: T = serde_json::from_value(value.clone()).map_err(|e| e.to_string())?;
    serde_json::to_value(&typed).map_err(|e| e.to_string())
}

#[test]
fn every_manifest_matches_its_kubernetes_api_type_field_for_field() {
    for d in docs() {
        let api = (d.value["apiVersion"].as_str().unwrap_or_default(), d.kind());
        let back = match api {
            ("v1", "Namespace") => round_trip::<Namespace>(&d.value),
            ("v1", "ServiceAccount") => round_trip::<ServiceAccount>(&d.value),
            ("v1", "Service") => round_trip::<Service>(&d.value),
            ("apps/v1", "Deployment") => round_trip::<Deployment>(&d.value),
            ("policy/v1", "PodDisruptionBudget") => round_trip::<PodDisruptionBudget>(&d.value),
            ("rbac.authorization.k8s.io/v1", "Role") => round_trip::<Role>(&d.value),
            ("rbac.authorization.k8s.io/v1", "RoleBinding") => round_trip::<RoleBinding>(&d.value),
            ("kustomize.config.k8s.io/v1beta1", "Kustomization") => continue,
            other => panic!("{}: no check for {other:?}; add its type here", d.file),
        };
        let back = back.unwrap_or_else(|e| panic!("{}: {} {:?} does not parse: {e}", d.file, d.kind(), d.name()));
        assert_eq!(back, d.value, "{}: {} {:?} has fields its API type does not know", d.file, d.kind(), d.name());
    }
}

/// `kubectl apply --dry-run=client` against the API server in `kubeconfig` (the fake): kubectl needs
/// one for discovery even in client dry-run, and GETs each object to see whether it exists. `-k` for the install; the example on its own, since
/// `-f deploy/kubernetes/` would also feed kubectl the kustomization.yaml, a kind it cannot map.
fn kubectl_dry_run(kubeconfig: &Path) {
    let example = format!("{DIR}/{EXAMPLE}");
    for source in [["-k", DIR], ["-f", example.as_str()]] {
        let out = Command::new("kubectl")
            .args(["apply", "--dry-run=client", "--validate=false", "-o", "json"])
            .args(source)
            .env("KUBECONFIG", kubeconfig)
            .output()
            .expect("run kubectl");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "kubectl apply {source:?} failed: {stderr}");
        let printed: Value = serde_json::from_slice(&out.stdout).expect("kubectl prints JSON");
        let items = printed["items"].as_array().cloned().unwrap_or_else(|| vec![printed.clone()]);
        assert!(!items.is_empty(), "kubectl apply {source:?} printed nothing");
        for item in items {
            assert!(item["kind"].is_string() && item["metadata"]["name"].is_string(), "kubectl printed {item}");
        }
    }
}

fn have_kubectl() -> bool {
    Command::new("kubectl").args(["version", "--client"]).output().is_ok_and(|o| o.status.success())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_accepts_the_install_and_the_sidecar_example() {
    // .ci/run installs kubectl; a machine without it must not pass this test silently.
    assert!(have_kubectl(), "kubectl is not on PATH: install it (bash .ci/run --setup-only does)");
    let fake = FakeKube::start(FakeConfig::new(NAMESPACE)).await;
    let dir = std::env::temp_dir().join(format!("mcp-ephemeral-deploy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let kubeconfig = fake.write_kubeconfig(&dir, "default");
    tokio::task::spawn_blocking(move || kubectl_dry_run(&kubeconfig)).await.expect("kubectl check");
    std::fs::remove_dir_all(&dir).ok();
}
