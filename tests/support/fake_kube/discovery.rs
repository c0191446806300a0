//! The kinds the fake serves and the discovery documents (`/api`, `/apis`, `/api/v1`,
//! `/apis/{group}/{version}`, `/version`) built from them: enough for kubectl's legacy discovery.
//! The built-in kinds are the static `TYPES`; kinds defined by a CustomResourceDefinition are
//! interned into a process-wide registry (`intern`) and served by the fakes whose store holds
//! their CRD (`Store::custom`), so that fakes running side by side in one test binary each see
//! only their own CRDs.

use std::sync::Mutex;

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
    /// Set for kinds a CustomResourceDefinition defines.
    pub custom: Option<Custom>,
}

/// What a custom kind adds to a `ResourceType`.
#[derive(Debug)]
pub(crate) struct Custom {
    pub id: TypeId,
    /// The name of the CRD that defines it (`mcpservers.mcp-ephemeral.dev`).
    pub crd: &'static str,
    pub categories: &'static [&'static str],
}

/// A custom kind as a CRD version defines it; equal definitions share one `ResourceType`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CustomDef {
    pub crd: String,
    pub group: String,
    pub version: String,
    pub plural: String,
    pub singular: String,
    pub kind: String,
    pub namespaced: bool,
    pub short_names: Vec<String>,
    pub categories: Vec<String>,
    pub status: bool,
    pub scale: bool,
}

static CUSTOM: Mutex<Vec<(CustomDef, &'static ResourceType)>> = Mutex::new(Vec::new());

fn leak(s: &str) -> &'static str {
    Box::leak(s.to_string().into_boxed_str())
}

fn leak_all(v: &[String]) -> &'static [&'static str] {
    Box::leak(v.iter().map(|s| leak(s)).collect::<Vec<_>>().into_boxed_slice())
}

/// The `ResourceType` of a custom kind; the same one for the same definition (the registry only
/// grows, by one entry per distinct definition a test registers).
pub(crate) fn intern(def: &CustomDef) -> &'static ResourceType {
    let mut reg = CUSTOM.lock().expect("custom types lock");
    if let Some((_, rt)) = reg.iter().find(|(d, _)| d == def) {
        return rt;
    }
    let mut subs: Vec<(&'static str, &'static [&'static str])> = Vec::new();
    if def.status {
        subs.push(STATUS);
    }
    if def.scale {
        subs.push(("scale", &["get", "patch", "update"]));
    }
    let rt: &'static ResourceType = Box::leak(Box::new(ResourceType {
        group: leak(&def.group),
        version: leak(&def.version),
        plural: leak(&def.plural),
        singular: leak(&def.singular),
        kind: leak(&def.kind),
        namespaced: def.namespaced,
        short_names: leak_all(&def.short_names),
        subresources: Box::leak(subs.into_boxed_slice()),
        returns_deleted_object: false,
        custom: Some(Custom {
            id: TYPES.len() + reg.len(),
            crd: leak(&def.crd),
            categories: leak_all(&def.categories),
        }),
    }));
    reg.push((def.clone(), rt));
    rt
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
            custom: None,
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
    rt!("coordination.k8s.io", "leases", "lease", "Lease", true, &[], &[], false),
    rt!(
        "apiextensions.k8s.io",
        "customresourcedefinitions",
        "customresourcedefinition",
        "CustomResourceDefinition",
        false,
        &["crd", "crds"],
        &[STATUS],
        false
    ),
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
        match &self.custom {
            Some(c) => c.id,
            None => TYPES.iter().position(|t| std::ptr::eq(t, self)).expect("a type of TYPES"),
        }
    }

    pub fn is_custom(&self) -> bool {
        self.custom.is_some()
    }
}

/// A built-in kind by group and resource.
pub(crate) fn by_resource(group: &str, plural: &str) -> Option<&'static ResourceType> {
    TYPES.iter().find(|t| t.group == group && t.plural == plural)
}

/// The built-in kinds, then `custom` (the custom kinds one fake serves).
pub(crate) fn served<'a>(custom: &'a [&'static ResourceType]) -> impl Iterator<Item = &'static ResourceType> + 'a {
    TYPES.iter().chain(custom.iter().copied())
}

/// A served kind by group, version and resource, as a request path names it.
pub(crate) fn find(
    custom: &[&'static ResourceType],
    group: &str,
    version: &str,
    plural: &str,
) -> Option<&'static ResourceType> {
    served(custom).find(|t| t.group == group && t.version == version && t.plural == plural)
}

/// By apiVersion (`batch/v1`, `v1`) and kind, as ownerReferences name their owner.
pub(crate) fn by_kind(
    custom: &[&'static ResourceType],
    api_version: &str,
    kind: &str,
) -> Option<&'static ResourceType> {
    served(custom).find(|t| t.kind == kind && t.api_version() == api_version)
}

/// Lenient lookup for the test-facing helpers: `"Pod"`, `"pods"`, `"pod"`, `"jobs.batch"`,
/// `"mcpservers"`.
pub(crate) fn by_name(custom: &[&'static ResourceType], name: &str) -> Option<&'static ResourceType> {
    let (name, group) = name.split_once('.').map_or((name, None), |(n, g)| (n, Some(g)));
    served(custom).find(|t| {
        group.is_none_or(|g| g == t.group)
            && (t.plural.eq_ignore_ascii_case(name)
                || t.singular.eq_ignore_ascii_case(name)
                || t.kind.eq_ignore_ascii_case(name))
    })
}

pub(crate) fn type_of(id: TypeId) -> &'static ResourceType {
    match TYPES.get(id) {
        Some(t) => t,
        None => CUSTOM.lock().expect("custom types lock")[id - TYPES.len()].1,
    }
}

/// Each group with its versions, groups in name order, versions as first served.
fn groups(custom: &[&'static ResourceType]) -> Vec<(&'static str, Vec<&'static str>)> {
    let mut gs: Vec<(&'static str, Vec<&'static str>)> = Vec::new();
    for t in served(custom).filter(|t| !t.group.is_empty()) {
        match gs.iter_mut().find(|(g, _)| *g == t.group) {
            Some((_, vs)) if !vs.contains(&t.version) => vs.push(t.version),
            Some(_) => {}
            None => gs.push((t.group, vec![t.version])),
        }
    }
    gs.sort_by_key(|(g, _)| *g);
    for (_, vs) in &mut gs {
        vs.sort_by_key(|v| std::cmp::Reverse(version_priority(v)));
    }
    gs
}

/// Kubernetes' version order: GA before beta before alpha, higher numbers first.
fn version_priority(v: &str) -> (u8, u32, u32) {
    let Some(rest) = v.strip_prefix('v') else { return (0, 0, 0) };
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    let major: u32 = digits.parse().unwrap_or(0);
    let tail = &rest[digits.len()..];
    let num = |s: &str| s.parse::<u32>().unwrap_or(0);
    match tail {
        "" => (3, major, 0),
        t if t.starts_with("beta") => (2, major, num(&t[4..])),
        t if t.starts_with("alpha") => (1, major, num(&t[5..])),
        _ => (0, 0, 0),
    }
}

pub(crate) fn is_group_version(custom: &[&'static ResourceType], group: &str, version: &str) -> bool {
    served(custom).any(|t| t.group == group && t.version == version)
}

/// `GET /api`
pub(crate) fn api_versions(server_address: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{ "clientCIDR": "0.0.0.0/0", "serverAddress": server_address }],
    })
}

fn group_json(group: &str, versions: &[&str]) -> Value {
    let gvs: Vec<Value> =
        versions.iter().map(|v| json!({ "groupVersion": format!("{group}/{v}"), "version": v })).collect();
    json!({ "name": group, "versions": gvs, "preferredVersion": gvs[0] })
}

/// `GET /apis`
pub(crate) fn api_group_list(custom: &[&'static ResourceType]) -> Value {
    let groups: Vec<Value> = groups(custom).iter().map(|(g, vs)| group_json(g, vs)).collect();
    json!({ "kind": "APIGroupList", "apiVersion": "v1", "groups": groups })
}

/// `GET /apis/{group}`
pub(crate) fn api_group(custom: &[&'static ResourceType], group: &str) -> Option<Value> {
    let (_, versions) = groups(custom).into_iter().find(|(g, _)| *g == group)?;
    let mut g = group_json(group, &versions);
    g["kind"] = json!("APIGroup");
    g["apiVersion"] = json!("v1");
    Some(g)
}

/// `GET /api/v1`, `GET /apis/{group}/{version}`
pub(crate) fn api_resource_list(custom: &[&'static ResourceType], group: &str, version: &str) -> Value {
    let mut resources = Vec::new();
    for t in served(custom).filter(|t| t.group == group && t.version == version) {
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
        if let Some(c) = &t.custom {
            if !c.categories.is_empty() {
                r["categories"] = json!(c.categories);
            }
        } else if matches!(
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
    let group_version = if group.is_empty() { version.to_string() } else { format!("{group}/{version}") };
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
