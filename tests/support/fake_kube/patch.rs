//! The PATCH flavours: JSON merge patch (RFC 7386), strategic merge patch (merge patch plus
//! merging the lists Kubernetes declares a merge key for, and the `$patch` directives), and JSON
//! patch (RFC 6902).

use serde_json::{Map, Value};

/// RFC 7386: objects merge recursively, `null` removes, anything else replaces.
pub(crate) fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let t = target.as_object_mut().expect("object");
    for (k, v) in p {
        if v.is_null() {
            t.remove(k);
        } else {
            merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
        }
    }
}

/// The merge key of a list field (the `patchMergeKey` of the Go types), by field name and the
/// path to it. `None`: the list is replaced.
fn merge_key(path: &[String], field: &str) -> Option<&'static str> {
    let in_container =
        path.iter().any(|p| matches!(p.as_str(), "containers" | "initContainers" | "ephemeralContainers"));
    Some(match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "env"
        | "volumes"
        | "imagePullSecrets"
        | "resourceClaims" => "name",
        "volumeMounts" => "mountPath",
        "volumeDevices" => "devicePath",
        "ports" if in_container => "containerPort",
        "ports" => "port",
        "ownerReferences" => "uid",
        "conditions" => "type",
        "hostAliases" => "ip",
        "topologySpreadConstraints" => "topologyKey",
        _ => return None,
    })
}

/// Lists of scalars that merge as sets.
fn is_merged_primitive_list(field: &str) -> bool {
    field == "finalizers"
}

fn strip_directives(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter().filter(|(k, _)| !k.starts_with('$')).map(|(k, v)| (k.clone(), strip_directives(v))).collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(strip_directives).collect()),
        other => other.clone(),
    }
}

/// Strategic merge patch, approximated: the merge keys of the common fields, `$patch: delete|replace`,
/// `$deleteFromPrimitiveList/…`; `$setElementOrder/…` and `$retainKeys` are ignored.
pub(crate) fn strategic_merge_patch(target: &mut Value, patch: &Value) {
    smp(target, patch, &mut Vec::new());
}

fn smp(target: &mut Value, patch: &Value, path: &mut Vec<String>) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    match p.get("$patch").and_then(Value::as_str) {
        Some("replace") => {
            *target = strip_directives(patch);
            return;
        }
        Some("delete") => {
            *target = Value::Object(Map::new());
            return;
        }
        _ => {}
    }
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let t = target.as_object_mut().expect("object");
    for (k, v) in p {
        if k == "$patch" || k == "$retainKeys" || k.starts_with("$setElementOrder/") {
            continue;
        }
        if let Some(field) = k.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(Value::Array(list)), Value::Array(remove)) = (t.get_mut(field), v) {
                list.retain(|x| !remove.contains(x));
            }
            continue;
        }
        if v.is_null() {
            t.remove(k);
            continue;
        }
        match (t.get_mut(k), v) {
            (Some(Value::Array(existing)), Value::Array(items)) => {
                if let Some(key) = merge_key(path, k) {
                    path.push(k.clone());
                    merge_list(existing, items, key, path);
                    path.pop();
                } else if is_merged_primitive_list(k) {
                    for item in items {
                        if !existing.contains(item) {
                            existing.push(item.clone());
                        }
                    }
                } else {
                    *existing = strip_directives(v).as_array().cloned().unwrap_or_default();
                }
            }
            (Some(existing), Value::Object(_)) if existing.is_object() => {
                path.push(k.clone());
                smp(existing, v, path);
                path.pop();
            }
            _ => {
                t.insert(k.clone(), strip_directives(v));
            }
        }
    }
}

fn merge_list(existing: &mut Vec<Value>, items: &[Value], key: &str, path: &mut Vec<String>) {
    for item in items {
        let Some(id) = item.get(key) else {
            existing.push(strip_directives(item));
            continue;
        };
        let pos = existing.iter().position(|e| e.get(key) == Some(id));
        if item.get("$patch").and_then(Value::as_str) == Some("delete") {
            if let Some(i) = pos {
                existing.remove(i);
            }
            continue;
        }
        match pos {
            Some(i) => smp(&mut existing[i], item, path),
            None => existing.push(strip_directives(item)),
        }
    }
}

fn pointer_tokens(pointer: &str) -> Result<Vec<String>, String> {
    if pointer.is_empty() {
        return Ok(Vec::new());
    }
    let rest = pointer.strip_prefix('/').ok_or_else(|| format!("invalid JSON pointer {pointer:?}"))?;
    Ok(rest.split('/').map(|t| t.replace("~1", "/").replace("~0", "~")).collect())
}

fn parent_mut<'a>(doc: &'a mut Value, tokens: &[String]) -> Result<&'a mut Value, String> {
    let mut cur = doc;
    for t in tokens {
        cur = match cur {
            Value::Object(m) => m.get_mut(t).ok_or_else(|| format!("doc is missing path: {t}"))?,
            Value::Array(a) => {
                let i: usize = t.parse().map_err(|_| format!("invalid array index {t:?}"))?;
                a.get_mut(i).ok_or_else(|| format!("array index {i} out of bounds"))?
            }
            _ => return Err(format!("doc is missing path: {t}")),
        };
    }
    Ok(cur)
}

fn add(doc: &mut Value, tokens: &[String], value: Value) -> Result<(), String> {
    let Some((last, parent)) = tokens.split_last() else {
        *doc = value;
        return Ok(());
    };
    match parent_mut(doc, parent)? {
        Value::Object(m) => {
            m.insert(last.clone(), value);
        }
        Value::Array(a) => {
            let i = if last == "-" { a.len() } else { last.parse().map_err(|_| format!("invalid index {last:?}"))? };
            if i > a.len() {
                return Err(format!("array index {i} out of bounds"));
            }
            a.insert(i, value);
        }
        _ => return Err("add to a scalar".into()),
    }
    Ok(())
}

fn remove(doc: &mut Value, tokens: &[String]) -> Result<Value, String> {
    let (last, parent) = tokens.split_last().ok_or("cannot remove the root")?;
    match parent_mut(doc, parent)? {
        Value::Object(m) => m.remove(last).ok_or_else(|| format!("unable to remove nonexistent key: {last}")),
        Value::Array(a) => {
            let i: usize = last.parse().map_err(|_| format!("invalid index {last:?}"))?;
            if i >= a.len() {
                return Err(format!("array index {i} out of bounds"));
            }
            Ok(a.remove(i))
        }
        _ => Err("remove from a scalar".into()),
    }
}

/// RFC 6902 JSON patch (`add`, `remove`, `replace`, `move`, `copy`, `test`).
pub(crate) fn json_patch(doc: &mut Value, ops: &Value) -> Result<(), String> {
    let ops = ops.as_array().ok_or("a JSON patch must be an array of operations")?;
    for op in ops {
        let kind = op["op"].as_str().ok_or("an operation needs \"op\"")?;
        let path = pointer_tokens(op["path"].as_str().ok_or("an operation needs \"path\"")?)?;
        match kind {
            "add" => add(doc, &path, op.get("value").cloned().ok_or("add needs a value")?)?,
            "remove" => {
                remove(doc, &path)?;
            }
            "replace" => {
                remove(doc, &path)?;
                add(doc, &path, op.get("value").cloned().ok_or("replace needs a value")?)?;
            }
            "move" | "copy" => {
                let from = pointer_tokens(op["from"].as_str().ok_or("move/copy needs \"from\"")?)?;
                let v = if kind == "move" { remove(doc, &from)? } else { parent_mut(doc, &from)?.clone() };
                add(doc, &path, v)?;
            }
            "test" => {
                let actual = parent_mut(doc, &path)?;
                if Some(&*actual) != op.get("value") {
                    return Err(format!("testing value {} failed", op["path"]));
                }
            }
            other => return Err(format!("Unexpected kind: {other}")),
        }
    }
    Ok(())
}
