//! What the API server does to an object before storing it: the defaults it fills (Job selector
//! and labels, pod spec defaults, Service cluster IP, Secret `stringData`, NetworkPolicy
//! `policyTypes` and port protocols), the status it resets on create, and the validation that
//! answers 422 Invalid (names, labels, Job/Pod/Secret/NetworkPolicy rules, immutable fields).
//! Wording follows the real messages.

use serde_json::{Map, Value, json};

use super::{
    discovery::ResourceType,
    status::{ApiError, FieldError},
    store::{Store, meta_str, name_of, uid_of},
};

/// 400 when the body names another apiVersion or kind than the URL.
pub(crate) fn check_type_meta(rt: &ResourceType, obj: &Value) -> Result<(), ApiError> {
    if let Some(av) = obj["apiVersion"].as_str()
        && !av.is_empty()
        && av != rt.api_version()
    {
        return Err(ApiError::bad_request(format!(
            "the API version in the data ({av}) does not match the expected API version ({})",
            rt.api_version()
        )));
    }
    if let Some(k) = obj["kind"].as_str()
        && !k.is_empty()
        && k != rt.kind
    {
        return Err(ApiError::bad_request(format!(
            "the kind in the data ({k}) does not match the expected kind ({})",
            rt.kind
        )));
    }
    Ok(())
}

fn is(rt: &ResourceType, group: &str, plural: &str) -> bool {
    rt.group == group && rt.plural == plural
}

fn obj_mut<'a>(v: &'a mut Value, field: &str) -> &'a mut Map<String, Value> {
    if !v[field].is_object() {
        v[field] = json!({});
    }
    v[field].as_object_mut().expect("object")
}

fn default(m: &mut Map<String, Value>, field: &str, value: Value) {
    if m.get(field).is_none_or(Value::is_null) {
        m.insert(field.to_string(), value);
    }
}

fn image_pull_policy(image: &str) -> &'static str {
    let last = image.rsplit('/').next().unwrap_or(image);
    if image.contains('@') {
        "IfNotPresent"
    } else {
        match last.split_once(':') {
            None => "Always",
            Some((_, "latest")) => "Always",
            Some(_) => "IfNotPresent",
        }
    }
}

/// SetDefaults_PodSpec and the container defaults; `is_pod`: also what admission adds to a Pod
/// (service account, default tolerations), not to a template.
fn default_pod_spec(spec: &mut Map<String, Value>, is_pod: bool) {
    default(spec, "restartPolicy", json!("Always"));
    default(spec, "dnsPolicy", json!("ClusterFirst"));
    default(spec, "schedulerName", json!("default-scheduler"));
    default(spec, "securityContext", json!({}));
    default(spec, "terminationGracePeriodSeconds", json!(30));
    if is_pod {
        default(spec, "serviceAccountName", json!("default"));
        let sa = spec["serviceAccountName"].clone();
        default(spec, "serviceAccount", sa);
        default(spec, "enableServiceLinks", json!(true));
        default(spec, "preemptionPolicy", json!("PreemptLowerPriority"));
        default(spec, "priority", json!(0));
        default(
            spec,
            "tolerations",
            json!([
                {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
                {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
            ]),
        );
    }
    for list in ["containers", "initContainers"] {
        if let Some(Value::Array(cs)) = spec.get_mut(list) {
            for c in cs.iter_mut().filter_map(Value::as_object_mut) {
                let image = c.get("image").and_then(Value::as_str).unwrap_or_default().to_string();
                default(c, "imagePullPolicy", json!(image_pull_policy(&image)));
                default(c, "terminationMessagePath", json!("/dev/termination-log"));
                default(c, "terminationMessagePolicy", json!("File"));
                default(c, "resources", json!({}));
                for side in ["requests", "limits"] {
                    if let Some(Value::Object(q)) = c.get_mut("resources").and_then(|r| r.get_mut(side)) {
                        for v in q.values_mut() {
                            if let Some(text) = v.as_str() {
                                *v = json!(canonical_quantity(text));
                            }
                        }
                    }
                }
                if let Some(Value::Array(ports)) = c.get_mut("ports") {
                    for p in ports.iter_mut().filter_map(Value::as_object_mut) {
                        default(p, "protocol", json!("TCP"));
                    }
                }
            }
        }
    }
}

/// The form the API server stores quantity `s` in (resource.Quantity's canonical string). A
/// binary quantity (`Ki`…`Ei`) of whole bytes, 1Ki or more, takes the largest binary suffix that
/// leaves a whole number (`1024Mi` → `1Gi`, `0.5Gi` → `512Mi`), or none (`1.5Ki` → `1536`). Any
/// other quantity takes the largest decimal suffix that leaves a whole number (`0.5` → `500m`,
/// `1000m` → `1`, `2000k` → `2M`, `1500` stays). What is not a quantity is left as it is.
fn canonical_quantity(s: &str) -> String {
    const BINARY: [(&str, u32); 6] = [("Ei", 60), ("Pi", 50), ("Ti", 40), ("Gi", 30), ("Mi", 20), ("Ki", 10)];
    const DECIMAL: [(&str, u32); 9] =
        [("E", 27), ("P", 24), ("T", 21), ("G", 18), ("M", 15), ("k", 12), ("", 9), ("m", 6), ("u", 3)];
    let Some(nanos) = mcp_ephemeral::spec::quantity_nanos(s) else { return s.to_string() };
    const ONE: i128 = 1_000_000_000;
    if s.ends_with('i') && nanos % ONE == 0 && nanos / ONE >= 1024 {
        let bytes = nanos / ONE;
        return match BINARY.iter().find(|(_, p)| bytes % (1_i128 << p) == 0) {
            Some((suffix, p)) => format!("{}{suffix}", bytes >> p),
            None => bytes.to_string(),
        };
    }
    if nanos == 0 {
        return "0".into();
    }
    match DECIMAL.iter().find(|(_, p)| nanos % 10_i128.pow(*p) == 0) {
        Some((suffix, p)) => format!("{}{suffix}", nanos / 10_i128.pow(*p)),
        None => format!("{nanos}n"),
    }
}

fn qos_class(spec: &Value) -> &'static str {
    let containers = spec["containers"].as_array().cloned().unwrap_or_default();
    let has = |c: &Value, k: &str| c["resources"][k].as_object().is_some_and(|m| !m.is_empty());
    if containers.iter().all(|c| !has(c, "requests") && !has(c, "limits")) {
        return "BestEffort";
    }
    let guaranteed = containers.iter().all(|c| {
        let l = &c["resources"]["limits"];
        let r = &c["resources"]["requests"];
        ["cpu", "memory"].iter().all(|k| l[k].is_string() && (r[k].is_null() || r[k] == l[k]))
    });
    if guaranteed { "Guaranteed" } else { "Burstable" }
}

/// Standard base64 (the encoding of Secret `data`).
pub(crate) fn base64(bytes: &[u8]) -> String {
    const T: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Decode standard base64; None when it is not valid.
pub(crate) fn unbase64(s: &str) -> Option<Vec<u8>> {
    let s = s.trim_end_matches('=');
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// `stringData` is write-only: it is merged into `data` (base64) and dropped.
fn fold_string_data(obj: &mut Value) {
    if let Some(Value::Object(sd)) = obj.as_object_mut().and_then(|o| o.remove("stringData")) {
        let data = obj_mut(obj, "data");
        for (k, v) in sd {
            data.insert(k, json!(base64(v.as_str().unwrap_or_default().as_bytes())));
        }
    }
}

/// Defaults and status reset on create (PrepareForCreate + defaulting + mutating admission).
pub(crate) fn prepare_create(rt: &ResourceType, obj: &mut Value, store: &mut Store) {
    let uid = uid_of(obj).to_string();
    let name = name_of(obj).to_string();
    match (rt.group, rt.plural) {
        ("", "pods") => {
            default_pod_spec(obj_mut(obj, "spec"), true);
            let qos = qos_class(&obj["spec"]);
            obj["status"] = json!({ "phase": "Pending", "qosClass": qos });
        }
        ("batch", "jobs") => {
            let spec = obj_mut(obj, "spec");
            default(spec, "parallelism", json!(1));
            default(spec, "completions", json!(1));
            default(spec, "backoffLimit", json!(6));
            default(spec, "completionMode", json!("NonIndexed"));
            default(spec, "suspend", json!(false));
            default(spec, "podReplacementPolicy", json!("TerminatingOrFailed"));
            if spec.get("manualSelector").and_then(Value::as_bool) != Some(true) {
                spec.insert("selector".into(), json!({ "matchLabels": { "batch.kubernetes.io/controller-uid": uid } }));
                let template = spec.entry("template").or_insert_with(|| json!({}));
                let labels = obj_mut(obj_mut_value(template, "metadata"), "labels");
                for (k, v) in [
                    ("batch.kubernetes.io/controller-uid", &uid),
                    ("batch.kubernetes.io/job-name", &name),
                    ("controller-uid", &uid),
                    ("job-name", &name),
                ] {
                    labels.insert(k.into(), json!(v));
                }
            }
            if let Some(tspec) = obj["spec"]["template"]["spec"].as_object_mut() {
                default_pod_spec(tspec, false);
            }
            obj["status"] = json!({});
        }
        ("apps", "deployments" | "statefulsets" | "daemonsets" | "replicasets") => {
            if let Some(tspec) = obj["spec"]["template"]["spec"].as_object_mut() {
                default_pod_spec(tspec, false);
            }
            obj["status"] = json!({});
        }
        ("", "services") => {
            let ip = store.cluster_ip();
            let spec = obj_mut(obj, "spec");
            default(spec, "type", json!("ClusterIP"));
            default(spec, "sessionAffinity", json!("None"));
            default(spec, "internalTrafficPolicy", json!("Cluster"));
            default(spec, "ipFamilies", json!(["IPv4"]));
            default(spec, "ipFamilyPolicy", json!("SingleStack"));
            if spec.get("clusterIP").and_then(Value::as_str) != Some("None") {
                spec.insert("clusterIP".into(), json!(ip));
            }
            let cip = spec["clusterIP"].clone();
            spec.insert("clusterIPs".into(), json!([cip]));
            if let Some(Value::Array(ports)) = spec.get_mut("ports") {
                for p in ports.iter_mut().filter_map(Value::as_object_mut) {
                    default(p, "protocol", json!("TCP"));
                    let port = p.get("port").cloned().unwrap_or(Value::Null);
                    default(p, "targetPort", port);
                }
            }
            obj["status"] = json!({ "loadBalancer": {} });
        }
        ("", "secrets") => {
            fold_string_data(obj);
            default(obj.as_object_mut().expect("object"), "type", json!("Opaque"));
        }
        ("networking.k8s.io", "networkpolicies") => default_network_policy(obj),
        ("", "namespaces") => {
            let labels = obj_mut(obj_mut_value(obj, "metadata"), "labels");
            labels.insert("kubernetes.io/metadata.name".into(), json!(name));
            obj["spec"] = json!({ "finalizers": ["kubernetes"] });
            obj["status"] = json!({ "phase": "Active" });
        }
        ("apiextensions.k8s.io", "customresourcedefinitions") => super::crds::prepare_create(obj),
        _ if rt.is_custom() => {
            // A custom resource's create cannot set a status that is a subresource.
            if rt.has_status()
                && let Some(m) = obj.as_object_mut()
            {
                m.remove("status");
            }
        }
        _ => {
            if rt.has_status() {
                obj["status"] = json!({});
            }
        }
    }
}

/// SetDefaults_NetworkPolicy: a port's protocol is TCP; without `policyTypes` a policy is
/// `Ingress`, and `Egress` too when it has egress rules.
fn default_network_policy(obj: &mut Value) {
    let spec = obj_mut(obj, "spec");
    for rules in ["ingress", "egress"] {
        for rule in spec.get_mut(rules).and_then(Value::as_array_mut).into_iter().flatten() {
            for p in rule.get_mut("ports").and_then(Value::as_array_mut).into_iter().flatten() {
                if let Some(p) = p.as_object_mut() {
                    default(p, "protocol", json!("TCP"));
                }
            }
        }
    }
    if spec.get("policyTypes").and_then(Value::as_array).is_none_or(Vec::is_empty) {
        let egress = spec.get("egress").and_then(Value::as_array).is_some_and(|e| !e.is_empty());
        let types = if egress { json!(["Ingress", "Egress"]) } else { json!(["Ingress"]) };
        spec.insert("policyTypes".into(), types);
    }
    default(spec, "podSelector", json!({}));
}

fn obj_mut_value<'a>(v: &'a mut Value, field: &str) -> &'a mut Value {
    if !v[field].is_object() {
        v[field] = json!({});
    }
    &mut v[field]
}

/// Defaulting on update: `stringData` folds into `data`; a Service keeps its cluster IP when the
/// update leaves it out.
pub(crate) fn prepare_update(rt: &ResourceType, obj: &mut Value, old: &Value) {
    if is(rt, "apiextensions.k8s.io", "customresourcedefinitions") {
        super::crds::prepare_update(obj);
    }
    if is(rt, "", "secrets") {
        fold_string_data(obj);
    }
    if is(rt, "networking.k8s.io", "networkpolicies") {
        default_network_policy(obj);
    }
    if is(rt, "", "services") && obj["spec"].is_object() {
        for f in ["clusterIP", "clusterIPs"] {
            if obj["spec"][f].is_null() {
                obj["spec"][f] = old["spec"][f].clone();
            }
        }
    }
}

const SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
const LABEL_1123_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
const LABEL_1035_MSG: &str = "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')";
const LABEL_VALUE_MSG: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')";
const NAME_PART_MSG: &str = "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";
const CONFIG_KEY_MSG: &str = "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')";

fn is_label_1123(s: &str) -> bool {
    !s.is_empty()
        && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn is_subdomain(s: &str) -> bool {
    !s.is_empty() && s.split('.').all(is_label_1123)
}

fn is_label_1035(s: &str) -> bool {
    is_label_1123(s) && s.starts_with(|c: char| c.is_ascii_lowercase())
}

fn is_label_value(v: &str) -> bool {
    v.is_empty()
        || (v.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            && v.starts_with(|c: char| c.is_ascii_alphanumeric())
            && v.ends_with(|c: char| c.is_ascii_alphanumeric()))
}

fn check_name(errs: &mut Vec<FieldError>, field: &str, name: &str, kind: NameKind) {
    let (ok, msg, max) = match kind {
        NameKind::Subdomain => (is_subdomain(name), SUBDOMAIN_MSG, 253),
        NameKind::Label1123 => (is_label_1123(name), LABEL_1123_MSG, 63),
        NameKind::Label1035 => (is_label_1035(name), LABEL_1035_MSG, 63),
        NameKind::PathSegment => {
            let ok = !name.contains('/') && !name.contains('%') && name != "." && name != "..";
            (ok, "may not contain '/' or '%'", usize::MAX)
        }
    };
    if name.len() > max {
        errs.push(FieldError::invalid(field, name, &format!("must be no more than {max} characters")));
    }
    if !ok {
        errs.push(FieldError::invalid(field, name, msg));
    }
}

#[derive(Clone, Copy)]
enum NameKind {
    Subdomain,
    Label1123,
    Label1035,
    PathSegment,
}

fn check_qualified_name(errs: &mut Vec<FieldError>, field: &str, key: &str) {
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(p) = prefix
        && !is_subdomain(p)
    {
        errs.push(FieldError::invalid(field, key, &format!("prefix part {SUBDOMAIN_MSG}")));
    }
    if name.is_empty() || name.len() > 63 || !is_label_value(name) {
        errs.push(FieldError::invalid(field, key, NAME_PART_MSG));
    }
}

fn check_labels(errs: &mut Vec<FieldError>, field: &str, labels: &Value) {
    let Some(m) = labels.as_object() else { return };
    for (k, v) in m {
        check_qualified_name(errs, field, k);
        let v = v.as_str().unwrap_or_default();
        if v.len() > 63 {
            errs.push(FieldError::invalid(field, v, "must be no more than 63 characters"));
        }
        if !is_label_value(v) {
            errs.push(FieldError::invalid(field, v, LABEL_VALUE_MSG));
        }
    }
}

/// ValidateLabelSelector: `matchLabels` as labels; each of `matchExpressions` a qualified key,
/// a known operator, and values exactly when the operator takes them.
fn check_label_selector(errs: &mut Vec<FieldError>, path: &str, selector: &Value) {
    check_labels(errs, &format!("{path}.matchLabels"), &selector["matchLabels"]);
    for (i, e) in selector["matchExpressions"].as_array().into_iter().flatten().enumerate() {
        let f = format!("{path}.matchExpressions[{i}]");
        check_qualified_name(errs, &format!("{f}.key"), e["key"].as_str().unwrap_or_default());
        let values = e["values"].as_array().map_or(0, Vec::len);
        match e["operator"].as_str().unwrap_or_default() {
            "In" | "NotIn" if values == 0 => errs.push(FieldError::required(
                format!("{f}.values"),
                "must be specified when `operator` is 'In' or 'NotIn'",
            )),
            "Exists" | "DoesNotExist" if values > 0 => errs.push(FieldError::forbidden(
                format!("{f}.values"),
                "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
            )),
            "In" | "NotIn" | "Exists" | "DoesNotExist" => {}
            op => errs.push(FieldError::invalid(format!("{f}.operator"), op, "not a valid selector operator")),
        }
        for (j, v) in e["values"].as_array().into_iter().flatten().enumerate() {
            let v = v.as_str().unwrap_or_default();
            if v.len() > 63 || !is_label_value(v) {
                errs.push(FieldError::invalid(format!("{f}.values[{j}]"), v, LABEL_VALUE_MSG));
            }
        }
    }
}

/// ValidateNetworkPolicySpec: the pod selector, each rule's ports (protocol, port number or
/// name, endPort) and peers (one kind each: pods and/or namespaces, or an ipBlock), and
/// `policyTypes`.
fn check_network_policy(errs: &mut Vec<FieldError>, spec: &Value) {
    check_label_selector(errs, "spec.podSelector", &spec["podSelector"]);
    for (rules, peers) in [("ingress", "from"), ("egress", "to")] {
        for (i, rule) in spec[rules].as_array().into_iter().flatten().enumerate() {
            for (j, p) in rule["ports"].as_array().into_iter().flatten().enumerate() {
                let f = format!("spec.{rules}[{i}].ports[{j}]");
                let protocol = p["protocol"].as_str().unwrap_or("TCP");
                if !matches!(protocol, "TCP" | "UDP" | "SCTP") {
                    errs.push(FieldError::unsupported(format!("{f}.protocol"), protocol, &["SCTP", "TCP", "UDP"]));
                }
                match &p["port"] {
                    Value::Null => {}
                    Value::Number(n) => {
                        if !n.as_i64().is_some_and(|n| (1..=65535).contains(&n)) {
                            errs.push(FieldError::invalid(
                                format!("{f}.port"),
                                &n.to_string(),
                                "must be between 1 and 65535, inclusive",
                            ));
                        }
                    }
                    Value::String(name) => {
                        let ok = (1..=15).contains(&name.len())
                            && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                            && name.chars().any(|c| c.is_ascii_lowercase())
                            && !name.starts_with('-')
                            && !name.ends_with('-')
                            && !name.contains("--");
                        if !ok {
                            errs.push(FieldError::invalid(format!("{f}.port"), name, "must be an IANA_SVC_NAME"));
                        }
                    }
                    other => errs.push(FieldError::invalid(format!("{f}.port"), &other.to_string(), "must be a port")),
                }
                if let Some(end) = p["endPort"].as_i64() {
                    match p["port"].as_i64() {
                        None => errs.push(FieldError::invalid(
                            format!("{f}.endPort"),
                            &end.to_string(),
                            "may not be specified when `port` is non-numeric",
                        )),
                        Some(port) if end < port => errs.push(FieldError::invalid(
                            format!("{f}.endPort"),
                            &end.to_string(),
                            "must be greater than or equal to `port`",
                        )),
                        Some(_) => {}
                    }
                }
            }
            for (k, peer) in rule[peers].as_array().into_iter().flatten().enumerate() {
                let f = format!("spec.{rules}[{i}].{peers}[{k}]");
                let has = |key: &str| peer[key].is_object();
                let selectors = ["podSelector", "namespaceSelector"].iter().filter(|k| has(k)).count();
                if selectors == 0 && !has("ipBlock") {
                    errs.push(FieldError::required(f.clone(), "must specify a peer"));
                } else if selectors > 0 && has("ipBlock") {
                    errs.push(FieldError::forbidden(f.clone(), "may not specify both ipBlock and another peer"));
                }
                for sel in ["podSelector", "namespaceSelector"] {
                    if has(sel) {
                        check_label_selector(errs, &format!("{f}.{sel}"), &peer[sel]);
                    }
                }
                if has("ipBlock") && peer["ipBlock"]["cidr"].as_str().is_none_or(str::is_empty) {
                    errs.push(FieldError::required(format!("{f}.ipBlock.cidr"), ""));
                }
            }
        }
    }
    let types = spec["policyTypes"].as_array().cloned().unwrap_or_default();
    for (i, t) in types.iter().enumerate() {
        let t = t.as_str().unwrap_or_default();
        if !matches!(t, "Ingress" | "Egress") {
            errs.push(FieldError::unsupported(format!("spec.policyTypes[{i}]"), t, &["Ingress", "Egress"]));
        }
    }
    if types.len() > 2 {
        errs.push(FieldError::invalid(
            "spec.policyTypes",
            &summary(&json!(types)),
            "may not specify more than two policyTypes",
        ));
    }
}

fn check_pod_spec(errs: &mut Vec<FieldError>, path: &str, spec: &Value) {
    let containers = spec["containers"].as_array();
    if containers.is_none_or(Vec::is_empty) {
        errs.push(FieldError::required(format!("{path}.containers"), ""));
    }
    for (i, c) in containers.into_iter().flatten().enumerate() {
        let f = format!("{path}.containers[{i}]");
        match c["name"].as_str() {
            None | Some("") => errs.push(FieldError::required(format!("{f}.name"), "")),
            Some(n) => check_name(errs, &format!("{f}.name"), n, NameKind::Label1123),
        }
        if c["image"].as_str().is_none_or(|s| s.trim().is_empty()) {
            errs.push(FieldError::required(format!("{f}.image"), ""));
        }
    }
    if let Some(rp) = spec["restartPolicy"].as_str()
        && !matches!(rp, "Always" | "OnFailure" | "Never")
    {
        errs.push(FieldError::unsupported(format!("{path}.restartPolicy"), rp, &["Always", "OnFailure", "Never"]));
    }
}

fn summary(v: &Value) -> String {
    let s = v.to_string();
    if s.len() > 120 { format!("{}…", &s[..s.char_indices().nth(120).map_or(s.len(), |(i, _)| i)]) } else { s }
}

/// The validation of create (`old` None) and update.
pub(crate) fn validate(rt: &ResourceType, obj: &Value, old: Option<&Value>) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let name = meta_str(obj, "name").unwrap_or_default();
    if name.is_empty() {
        errs.push(FieldError::required("metadata.name", "name or generateName is required"));
    } else if old.is_none() {
        let kind = match (rt.group, rt.plural) {
            ("", "services") => NameKind::Label1035,
            ("", "namespaces") => NameKind::Label1123,
            ("rbac.authorization.k8s.io", _) => NameKind::PathSegment,
            _ => NameKind::Subdomain,
        };
        check_name(&mut errs, "metadata.name", name, kind);
    }
    check_labels(&mut errs, "metadata.labels", &obj["metadata"]["labels"]);
    if let Some(a) = obj["metadata"]["annotations"].as_object() {
        let mut total = 0;
        for (k, v) in a {
            check_qualified_name(&mut errs, "metadata.annotations", k);
            total += k.len() + v.as_str().map_or(0, str::len);
        }
        if total > 256 * 1024 {
            errs.push(FieldError::too_long("metadata.annotations", 256 * 1024));
        }
    }
    match (rt.group, rt.plural) {
        ("batch", "jobs") => {
            let spec = &obj["spec"];
            check_labels(&mut errs, "spec.template.metadata.labels", &spec["template"]["metadata"]["labels"]);
            check_pod_spec(&mut errs, "spec.template.spec", &spec["template"]["spec"]);
            let rp = spec["template"]["spec"]["restartPolicy"].as_str().unwrap_or_default();
            if !matches!(rp, "OnFailure" | "Never") {
                errs.push(FieldError::unsupported("spec.template.spec.restartPolicy", rp, &["OnFailure", "Never"]));
            }
            for f in ["backoffLimit", "activeDeadlineSeconds", "ttlSecondsAfterFinished", "parallelism", "completions"]
            {
                if spec[f].as_i64().is_some_and(|n| n < 0 || (f == "activeDeadlineSeconds" && n == 0)) {
                    let detail = if f == "activeDeadlineSeconds" {
                        "must be greater than 0"
                    } else {
                        "must be greater than or equal to 0"
                    };
                    errs.push(FieldError::invalid(format!("spec.{f}"), &spec[f].to_string(), detail));
                }
            }
            if let Some(old) = old {
                for f in ["template", "selector", "completionMode"] {
                    if spec[f] != old["spec"][f] {
                        errs.push(FieldError {
                            field: format!("spec.{f}"),
                            reason: "FieldValueInvalid",
                            detail: format!("Invalid value: {}: field is immutable", summary(&spec[f])),
                        });
                    }
                }
            }
        }
        ("", "pods") => {
            check_pod_spec(&mut errs, "spec", &obj["spec"]);
            if let Some(old) = old {
                let strip = |s: &Value| {
                    let mut s = s.clone();
                    for list in ["containers", "initContainers"] {
                        if let Some(cs) = s[list].as_array_mut() {
                            for c in cs.iter_mut() {
                                c["image"] = Value::Null;
                            }
                        }
                    }
                    if let Some(m) = s.as_object_mut() {
                        for f in ["activeDeadlineSeconds", "tolerations", "terminationGracePeriodSeconds", "nodeName"] {
                            m.remove(f);
                        }
                    }
                    s
                };
                if strip(&obj["spec"]) != strip(&old["spec"]) {
                    errs.push(FieldError::forbidden(
                        "spec",
                        "pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)",
                    ));
                }
            }
        }
        ("", "secrets") => {
            let mut total = 0;
            if let Some(data) = obj["data"].as_object() {
                for (k, v) in data {
                    if k.is_empty() || !k.chars().all(|c| c.is_ascii_alphanumeric() || "-._".contains(c)) {
                        errs.push(FieldError::invalid(format!("data[{k}]"), k, CONFIG_KEY_MSG));
                    }
                    match v.as_str().and_then(unbase64) {
                        Some(b) => total += b.len(),
                        None => errs.push(FieldError::invalid(
                            format!("data[{k}]"),
                            "<secret contents redacted>",
                            "illegal base64 data",
                        )),
                    }
                }
            }
            if total > 1024 * 1024 {
                errs.push(FieldError::too_long("data", 1024 * 1024));
            }
            if let Some(old) = old
                && old["immutable"].as_bool() == Some(true)
            {
                if obj["data"] != old["data"] {
                    errs.push(FieldError::forbidden("data", "field is immutable when `immutable` is set"));
                }
                if obj["immutable"] != old["immutable"] {
                    errs.push(FieldError::forbidden("immutable", "field is immutable when `immutable` is set"));
                }
            }
        }
        ("networking.k8s.io", "networkpolicies") => check_network_policy(&mut errs, &obj["spec"]),
        ("apiextensions.k8s.io", "customresourcedefinitions") => errs.extend(super::crds::validate(obj, old)),
        ("", "services") => {
            let spec = &obj["spec"];
            let headless = spec["clusterIP"].as_str() == Some("None");
            let external = spec["type"].as_str() == Some("ExternalName");
            if !headless && !external && spec["ports"].as_array().is_none_or(Vec::is_empty) {
                errs.push(FieldError::required("spec.ports", ""));
            }
            if let Some(old) = old
                && spec["clusterIP"] != old["spec"]["clusterIP"]
            {
                errs.push(FieldError {
                    field: "spec.clusterIPs[0]".into(),
                    reason: "FieldValueInvalid",
                    detail: format!("Invalid value: {}: may not change once set", summary(&spec["clusterIPs"])),
                });
            }
        }
        _ => {}
    }
    errs
}
