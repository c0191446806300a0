//! CustomResourceDefinitions: the kinds a CRD defines (`defs`, interned by discovery and served by
//! the store that holds the CRD), what the apiextensions server does on create (accepted names,
//! `NamesAccepted` and `Established` conditions, the cleanup finalizer), and the Table a
//! `kubectl get` of custom resources receives (additionalPrinterColumns, simple JSONPaths).
//! Schemas are not applied: no validation, no pruning, no defaulting (as if every version had
//! `x-kubernetes-preserve-unknown-fields: true`), and no conversion between versions.

use std::time::SystemTime;

use serde_json::{Value, json};

use super::{
    discovery::{self, CustomDef, ResourceType},
    status::FieldError,
    store::{finalizers, meta_str, now_rfc3339, set_finalizers},
};

/// The finalizer the apiextensions server puts on every CRD: the CRD goes once its objects have.
pub(crate) const CLEANUP_FINALIZER: &str = "customresourcecleanup.apiextensions.k8s.io";

pub(crate) fn crd_type() -> &'static ResourceType {
    discovery::by_resource("apiextensions.k8s.io", "customresourcedefinitions").expect("crd type")
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array().into_iter().flatten().filter_map(|s| s.as_str().map(String::from)).collect()
}

fn names(spec: &Value) -> Value {
    let mut n = spec["names"].clone();
    if n["singular"].as_str().is_none_or(str::is_empty)
        && let Some(kind) = n["kind"].as_str()
    {
        n["singular"] = json!(kind.to_lowercase());
    }
    if n["listKind"].as_str().is_none_or(str::is_empty)
        && let Some(kind) = n["kind"].as_str()
    {
        n["listKind"] = json!(format!("{kind}List"));
    }
    n
}

/// One kind per served version of the CRD `crd`.
pub(crate) fn defs(crd: &Value) -> Vec<CustomDef> {
    let spec = &crd["spec"];
    let n = names(spec);
    let (Some(group), Some(plural), Some(kind)) = (spec["group"].as_str(), n["plural"].as_str(), n["kind"].as_str())
    else {
        return Vec::new();
    };
    spec["versions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|v| v["served"].as_bool() != Some(false))
        .filter_map(|v| {
            Some(CustomDef {
                crd: meta_str(crd, "name").unwrap_or_default().to_string(),
                group: group.to_string(),
                version: v["name"].as_str()?.to_string(),
                plural: plural.to_string(),
                singular: n["singular"].as_str().unwrap_or_default().to_string(),
                kind: kind.to_string(),
                namespaced: spec["scope"].as_str() != Some("Cluster"),
                short_names: strings(&n["shortNames"]),
                categories: strings(&n["categories"]),
                status: v["subresources"]["status"].is_object(),
                scale: v["subresources"]["scale"].is_object(),
            })
        })
        .collect()
}

fn condition(type_: &str, status: &str, reason: &str, message: &str) -> Value {
    json!({ "type": type_, "status": status, "reason": reason, "message": message,
            "lastTransitionTime": now_rfc3339() })
}

/// Create: the names are accepted and the CRD is established at once (no name conflicts are
/// checked), and it gets the cleanup finalizer.
pub(crate) fn prepare_create(crd: &mut Value) {
    let spec = &crd["spec"];
    let stored: Vec<Value> = spec["versions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|v| v["storage"].as_bool() == Some(true))
        .map(|v| v["name"].clone())
        .collect();
    crd["status"] = json!({
        "acceptedNames": names(spec),
        "storedVersions": stored,
        "conditions": [
            condition("NamesAccepted", "True", "NoConflicts", "no conflicts found"),
            condition("Established", "True", "InitialNamesAccepted", "the initial names have been accepted"),
        ],
    });
    let mut f = finalizers(crd);
    if !f.iter().any(|x| x == CLEANUP_FINALIZER) {
        f.push(CLEANUP_FINALIZER.into());
    }
    set_finalizers(crd, &f);
}

/// Update: the accepted names follow the spec.
pub(crate) fn prepare_update(crd: &mut Value) {
    let n = names(&crd["spec"]);
    if crd["status"].is_object() {
        crd["status"]["acceptedNames"] = n;
    }
}

/// Deletion under way: the `Terminating` condition.
pub(crate) fn mark_terminating(crd: &mut Value) {
    let conds = crd["status"]["conditions"].as_array().cloned().unwrap_or_default();
    if conds.iter().any(|c| c["type"] == "Terminating") {
        return;
    }
    let mut conds = conds;
    conds.push(condition(
        "Terminating",
        "True",
        "InstanceDeletionInProgress",
        "CustomResourceDefinition marked for deletion; deleting instances",
    ));
    crd["status"]["conditions"] = json!(conds);
}

/// The structural checks of the apiextensions server that a hand-written CRD can fail.
pub(crate) fn validate(crd: &Value, old: Option<&Value>) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let spec = &crd["spec"];
    let group = spec["group"].as_str().unwrap_or_default();
    let plural = spec["names"]["plural"].as_str().unwrap_or_default();
    if group.is_empty() {
        errs.push(FieldError::required("spec.group", ""));
    } else if !group.contains('.') {
        errs.push(FieldError::invalid("spec.group", group, "should be a domain with at least one dot"));
    }
    if plural.is_empty() {
        errs.push(FieldError::required("spec.names.plural", ""));
    }
    if spec["names"]["kind"].as_str().is_none_or(str::is_empty) {
        errs.push(FieldError::required("spec.names.kind", ""));
    }
    let name = meta_str(crd, "name").unwrap_or_default();
    if !group.is_empty() && !plural.is_empty() && name != format!("{plural}.{group}") {
        errs.push(FieldError::invalid("metadata.name", name, "must be spec.names.plural+\".\"+spec.group"));
    }
    let scope = spec["scope"].as_str().unwrap_or_default();
    if !matches!(scope, "Namespaced" | "Cluster") {
        errs.push(FieldError::unsupported("spec.scope", scope, &["Cluster", "Namespaced"]));
    }
    let versions = spec["versions"].as_array().cloned().unwrap_or_default();
    if versions.is_empty() {
        errs.push(FieldError::invalid(
            "spec.versions",
            "null",
            "must have exactly one version marked as storage version",
        ));
    } else if versions.iter().filter(|v| v["storage"].as_bool() == Some(true)).count() != 1 {
        errs.push(FieldError::invalid(
            "spec.versions",
            &Value::Array(versions).to_string(),
            "must have exactly one version marked as storage version",
        ));
    }
    if let Some(old) = old {
        for f in ["group", "scope"] {
            if spec[f] != old["spec"][f] {
                errs.push(FieldError::immutable(format!("spec.{f}")));
            }
        }
        if spec["names"]["plural"] != old["spec"]["names"]["plural"] {
            errs.push(FieldError::immutable("spec.names.plural"));
        }
    }
    errs
}

/// The additionalPrinterColumns of `version` (the default `Age` column when it declares none).
fn columns(crd: Option<&Value>, version: &str) -> Vec<Value> {
    let declared = crd.and_then(|c| {
        c["spec"]["versions"].as_array()?.iter().find(|v| v["name"] == version)?["additionalPrinterColumns"]
            .as_array()
            .cloned()
    });
    declared
        .unwrap_or_else(|| vec![json!({ "name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp" })])
}

/// The values a simple JSONPath (`.a.b`, `.a[0].b`, `.a[*].b`, `.a['b.c']`, with or without
/// `{}`) finds.
pub(crate) fn json_path<'a>(obj: &'a Value, path: &str) -> Vec<&'a Value> {
    let path = path.trim().trim_start_matches('{').trim_end_matches('}').trim();
    let mut tokens: Vec<String> = Vec::new();
    let mut rest = path.strip_prefix('$').unwrap_or(path);
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('.') {
            let end = r.find(['.', '[']).unwrap_or(r.len());
            if end > 0 {
                tokens.push(r[..end].to_string());
            }
            rest = &r[end..];
        } else if let Some(r) = rest.strip_prefix('[') {
            let Some(end) = r.find(']') else { return Vec::new() };
            tokens.push(r[..end].trim_matches(|c| c == '\'' || c == '"').to_string());
            rest = &r[end + 1..];
        } else {
            return Vec::new();
        }
    }
    let mut cur = vec![obj];
    for t in &tokens {
        let mut next = Vec::new();
        for v in cur {
            match (v, t.as_str()) {
                (Value::Array(a), "*") => next.extend(a.iter()),
                (Value::Object(m), "*") => next.extend(m.values()),
                (Value::Array(a), i) => {
                    if let Some(x) = i.parse::<usize>().ok().and_then(|i| a.get(i)) {
                        next.push(x);
                    }
                }
                (Value::Object(m), k) => {
                    if let Some(x) = m.get(k) {
                        next.push(x);
                    }
                }
                _ => {}
            }
        }
        cur = next;
    }
    cur.into_iter().filter(|v| !v.is_null()).collect()
}

/// Kubernetes' `duration.HumanDuration`: `42s`, `3m7s`, `17m`, `5h3m`, `2d`, `3y12d`.
pub(crate) fn human_duration(d: std::time::Duration) -> String {
    let s = d.as_secs();
    let (m, h, days) = (s / 60, s / 3600, s / 86400);
    if s < 120 {
        format!("{s}s")
    } else if m < 10 {
        if s.is_multiple_of(60) { format!("{m}m") } else { format!("{m}m{}s", s % 60) }
    } else if h < 3 {
        format!("{m}m")
    } else if h < 8 {
        if m.is_multiple_of(60) { format!("{h}h") } else { format!("{h}h{}m", m % 60) }
    } else if h < 48 {
        format!("{h}h")
    } else if h < 24 * 8 {
        if h.is_multiple_of(24) { format!("{days}d") } else { format!("{days}d{}h", h % 24) }
    } else if days < 365 * 2 {
        format!("{days}d")
    } else if days < 365 * 8 {
        let y = days / 365;
        if days.is_multiple_of(365) { format!("{y}y") } else { format!("{y}y{}d", days % 365) }
    } else {
        format!("{}y", days / 365)
    }
}

/// One cell, as the apiextensions table convertor makes it: `string` columns print the JSONPath
/// result (JSON for lists and maps), `date` columns become an age, numbers and booleans stay.
fn cell(column: &Value, obj: &Value) -> Value {
    let found = json_path(obj, column["jsonPath"].as_str().unwrap_or_default());
    let Some(v) = found.first() else { return Value::Null };
    match column["type"].as_str().unwrap_or("string") {
        "date" => {
            let Some(t) = v.as_str().and_then(|s| humantime::parse_rfc3339_weak(s).ok()) else {
                return json!("<invalid>");
            };
            match SystemTime::now().duration_since(t) {
                Ok(d) => json!(human_duration(d)),
                Err(_) => json!("0s"),
            }
        }
        "integer" | "number" | "boolean" if !v.is_string() => (*v).clone(),
        _ => match v {
            Value::String(s) => json!(s),
            other => json!(other.to_string()),
        },
    }
}

/// The `meta.k8s.io/v1` Table of custom resources `items` (kind `rt`, defined by `crd`), with each
/// row's object as `include` says (`None`, `Metadata` (the default), `Object`).
pub(crate) fn table(
    crd: Option<&Value>,
    rt: &ResourceType,
    items: &[Value],
    list_meta: Value,
    include: Option<&str>,
) -> Value {
    let cols = columns(crd, rt.version);
    let mut defs = vec![json!({
        "name": "Name", "type": "string", "format": "name", "priority": 0,
        "description": "Name must be unique within a namespace. Is required when creating resources, although some \
                        resources may allow a client to request the generation of an appropriate name automatically. \
                        Name is primarily intended for creation idempotence and configuration definition. Cannot be \
                        updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names",
    })];
    defs.extend(cols.iter().map(|c| {
        json!({
            "name": c["name"], "type": c["type"].as_str().unwrap_or("string"),
            "format": c["format"].as_str().unwrap_or_default(),
            "description": c["description"].as_str().unwrap_or_default(),
            "priority": c["priority"].as_i64().unwrap_or(0),
        })
    }));
    let rows: Vec<Value> = items
        .iter()
        .map(|o| {
            let mut cells = vec![o["metadata"]["name"].clone()];
            cells.extend(cols.iter().map(|c| cell(c, o)));
            let mut row = json!({ "cells": cells });
            match include.unwrap_or("Metadata") {
                "None" => {}
                "Object" => row["object"] = o.clone(),
                _ => {
                    row["object"] = json!({
                        "kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": o["metadata"],
                    });
                }
            }
            row
        })
        .collect();
    json!({
        "kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": list_meta,
        "columnDefinitions": defs, "rows": rows,
    })
}

/// Whether the Accept header asks for a Table (`application/json;as=Table;v=v1;g=meta.k8s.io`).
pub(crate) fn wants_table(accept: &str) -> bool {
    accept.split(',').any(|a| a.split(';').any(|p| p.trim() == "as=Table"))
}
