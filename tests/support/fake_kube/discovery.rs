//! The kinds the fake serves and the discovery documents (`/api`, `/apis`, `/api/v1`,
//! `/apis/{group}/{version}`, `/version`) built from them: enough for kubectl's legacy discovery.

use serde_json::{Value, json};

/// One resource type the fake stores. Every listed type supports the generic verbs; only pods and
/// jobs have controllers behind them.
#[derive(Debug)]
pub(crate) struct ResourceType {
    pub group: &'static str,
    pub version: &'static str,
    pub plural: &'static str,
    pub singular: &'static str,
    pub kind: &'static str,
    pub namespaced: bool,
    pub short_names: &'static [&'static str],
    /// Subresources and their verbs, e.g. `("log", &["get"])`.
    pub subresources: &'static [(&'static str, &'static [&'static str])],
    /// Whether a DELETE answers with the object (the registry's `ReturnDeletedObject`) rather than a
    /// `Success` Status once the object is gone.
    pub returns_deleted_object: bool,
}

const ALL_VERBS: &[&str] = &["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"];
const STATUS: (&str, &[&str]) = ("status", &["get", "patch", "update"]);

macro_rules! rt {
    ($group:expr, $plural:expr, $singular:expr, $kind:expr, $namespaced:expr, $short:expr, $sub:expr, $ret:expr) => {
        ResourceType {
            group: $group,
            version: "v1",
            plural: $plural,
            singular: $singular,
            kind: $kind,
            namespaced: $namespaced,
            short_names: $short,
            subresources: $sub,
            returns_deleted_object: $ret,
        }
    };
}

pub(crate) static TYPES: &[ResourceType] = &[
    rt!(
        "",
        "pods",
        "pod",
        "Pod",
        true,
        &["po"],
        &[
            STATUS,
            ("log", &["get"]),
            ("portforward", &["create", "get"]),
            ("exec", &["create", "get"]),
            ("attach", &["create", "get"]),
            ("binding", &["create"]),
            ("eviction", &["create"]),
        ],
        true
    ),
    rt!(
        "",
        "services",
        "service",
        "Service",
        true,
        &["svc"],
        &[STATUS, ("proxy", &["create", "delete", "get", "patch", "update"])],
        true
    ),
    rt!("", "secrets", "secret", "Secret", true, &[], &[], false),
    rt!("", "configmaps", "configmap", "ConfigMap", true, &["cm"], &[], false),
    rt!("", "events", "event", "Event", true, &["ev"], &[], false),
    rt!("", "namespaces", "namespace", "Namespace", false, &["ns"], &[STATUS, ("finalize", &["update"])], true),
    rt!("", "serviceaccounts", "serviceaccount", "ServiceAccount", true, &["sa"], &[("token", &["create"])], true),
    rt!("", "endpoints", "endpoints", "Endpoints", true, &["ep"], &[], false),
    rt!(
        "",
        "persistentvolumeclaims",
        "persistentvolumeclaim",
        "PersistentVolumeClaim",
        true,
        &["pvc"],
        &[STATUS],
        false
    ),
    rt!("", "nodes", "node", "Node", false, &["no"], &[STATUS], false),
    rt!(
        "apps",
        "deployments",
        "deployment",
        "Deployment",
        true,
        &["deploy"],
        &[STATUS, ("scale", &["get", "patch", "update"])],
        false
    ),
    rt!("apps", "statefulsets", "statefulset", "StatefulSet", true, &["sts"], &[STATUS], false),
    rt!("apps", "daemonsets", "daemonset", "DaemonSet", true, &["ds"], &[STATUS], false),
    rt!("apps", "replicasets", "replicaset", "ReplicaSet", true, &["rs"], &[STATUS], false),
    rt!("batch", "jobs", "job", "Job", true, &[], &[STATUS], false),
    rt!("batch", "cronjobs", "cronjob", "CronJob", true, &["cj"], &[STATUS], false),
    rt!("rbac.authorization.k8s.io", "roles", "role", "Role", true, &[], &[], false),
    rt!("rbac.authorization.k8s.io", "rolebindings", "rolebinding", "RoleBinding", true, &[], &[], false),
    rt!("rbac.authorization.k8s.io", "clusterroles", "clusterrole", "ClusterRole", false, &[], &[], false),
    rt!(
        "rbac.authorization.k8s.io",
        "clusterrolebindings",
        "clusterrolebinding",
        "ClusterRoleBinding",
        false,
        &[],
        &[],
        false
    ),
    rt!("networking.k8s.io", "networkpolicies", "networkpolicy", "NetworkPolicy", true, &["netpol"], &[], false),
    rt!("networking.k8s.io", "ingresses", "ingress", "Ingress", true, &["ing"], &[STATUS], false),
    rt!(
        "policy",
        "poddisruptionbudgets",
        "poddisruptionbudget",
        "PodDisruptionBudget",
        true,
        &["pdb"],
        &[STATUS],
        false
    ),
];

/// Index of the type, used as the key's first part.
pub(crate) type TypeId = usize;

impl ResourceType {
    pub fn api_version(&self) -> String {
        if self.group.is_empty() { self.version.to_string() } else { format!("{}/{}", self.group, self.version) }
    }

    /// `jobs.batch`, `pods`: how messages name the resource.
    pub fn qualified(&self) -> String {
        if self.group.is_empty() { self.plural.to_string() } else { format!("{}.{}", self.plural, self.group) }
    }

    pub fn has_subresource(&self, sub: &str) -> bool {
        self.subresources.iter().any(|(s, _)| *s == sub)
    }

    /// Whether `.status` is a subresource: then writes to the main resource leave it alone.
    pub fn has_status(&self) -> bool {
        self.has_subresource("status")
    }

    pub fn id(&self) -> TypeId {
        TYPES.iter().position(|t| std::ptr::eq(t, self)).expect("a type of TYPES")
    }
}

pub(crate) fn by_resource(group: &str, plural: &str) -> Option<&'static ResourceType> {
    TYPES.iter().find(|t| t.group == group && t.plural == plural)
}

/// By apiVersion (`batch/v1`, `v1`) and kind, as ownerReferences name their owner.
pub(crate) fn by_kind(api_version: &str, kind: &str) -> Option<&'static ResourceType> {
    TYPES.iter().find(|t| t.kind == kind && t.api_version() == api_version)
}

/// Lenient lookup for the test-facing helpers: `"Pod"`, `"pods"`, `"pod"`, `"jobs.batch"`.
pub(crate) fn by_name(name: &str) -> Option<&'static ResourceType> {
    let (name, group) = name.split_once('.').map_or((name, None), |(n, g)| (n, Some(g)));
    TYPES.iter().find(|t| {
        group.is_none_or(|g| g == t.group)
            && (t.plural.eq_ignore_ascii_case(name)
                || t.singular.eq_ignore_ascii_case(name)
                || t.kind.eq_ignore_ascii_case(name))
    })
}

pub(crate) fn type_of(id: TypeId) -> &'static ResourceType {
    &TYPES[id]
}

fn groups() -> Vec<&'static str> {
    let mut gs: Vec<&str> = TYPES.iter().map(|t| t.group).filter(|g| !g.is_empty()).collect();
    gs.dedup();
    gs.sort();
    gs.dedup();
    gs
}

pub(crate) fn is_group_version(group: &str, version: &str) -> bool {
    version == "v1" && TYPES.iter().any(|t| t.group == group)
}

/// `GET /api`
pub(crate) fn api_versions(server_address: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{ "clientCIDR": "0.0.0.0/0", "serverAddress": server_address }],
    })
}

fn group_json(group: &str) -> Value {
    let gv = json!({ "groupVersion": format!("{group}/v1"), "version": "v1" });
    json!({ "name": group, "versions": [gv.clone()], "preferredVersion": gv })
}

/// `GET /apis`
pub(crate) fn api_group_list() -> Value {
    json!({ "kind": "APIGroupList", "apiVersion": "v1", "groups": groups().into_iter().map(group_json).collect::<Vec<_>>() })
}

/// `GET /apis/{group}`
pub(crate) fn api_group(group: &str) -> Option<Value> {
    if !groups().contains(&group) {
        return None;
    }
    let mut g = group_json(group);
    g["kind"] = json!("APIGroup");
    g["apiVersion"] = json!("v1");
    Some(g)
}

/// `GET /api/v1`, `GET /apis/{group}/v1`
pub(crate) fn api_resource_list(group: &str) -> Value {
    let mut resources = Vec::new();
    for t in TYPES.iter().filter(|t| t.group == group) {
        let verbs: &[&str] = if t.plural == "namespaces" {
            &["create", "delete", "get", "list", "patch", "update", "watch"]
        } else {
            ALL_VERBS
        };
        let mut r = json!({
            "name": t.plural,
            "singularName": t.singular,
            "namespaced": t.namespaced,
            "kind": t.kind,
            "verbs": verbs,
        });
        if !t.short_names.is_empty() {
            r["shortNames"] = json!(t.short_names);
        }
        if matches!(
            t.plural,
            "pods" | "services" | "deployments" | "jobs" | "cronjobs" | "statefulsets" | "daemonsets" | "replicasets"
        ) {
            r["categories"] = json!(["all"]);
        }
        resources.push(r);
        for (sub, verbs) in t.subresources {
            let kind = match *sub {
                "binding" => "Binding",
                "eviction" => "Eviction",
                "scale" => "Scale",
                "token" => "TokenRequest",
                "portforward" => "PodPortForwardOptions",
                "exec" => "PodExecOptions",
                "attach" => "PodAttachOptions",
                "proxy" if t.plural == "services" => "ServiceProxyOptions",
                _ => t.kind,
            };
            resources.push(json!({
                "name": format!("{}/{sub}", t.plural),
                "singularName": "",
                "namespaced": t.namespaced,
                "kind": kind,
                "verbs": verbs,
            }));
        }
    }
    let group_version = if group.is_empty() { "v1".to_string() } else { format!("{group}/v1") };
    json!({ "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": resources })
}

/// `GET /version`
pub(crate) fn version() -> Value {
    json!({
        "major": "1",
        "minor": "33",
        "gitVersion": "v1.33.0-fake",
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2025-04-23T00:00:00Z",
        "goVersion": "go1.24.2",
        "compiler": "gc",
        "platform": "linux/amd64",
    })
}
