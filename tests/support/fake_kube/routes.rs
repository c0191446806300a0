//! HTTP: one fallback handler parses the path like the API server (core `/api/v1`, groups
//! `/apis/{group}/{version}`, namespaced and cluster-scoped resources, subresources), records the
//! request as RBAC sees it, applies the fault rules and dispatches to the verbs.

use std::{collections::HashMap, sync::Arc, time::Duration};

use axum::{
    body::Body,
    extract::{Query, Request, State},
    http::{Method, header},
    response::Response,
};
use serde_json::{Value, json};

use super::{
    Shared, discovery,
    discovery::ResourceType,
    faults::AfterWrite,
    selectors::{FieldSelector, LabelSelector},
    status::{self, ApiError, json_response, text_response},
    store::{DeleteOpts, Deleted, Key, PatchKind, Propagation, name_of},
    watch::{self, WatchParams},
};

/// One request the fake received, as RBAC would authorize it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestRecord {
    /// The RBAC verb: get, list, watch, create, update, patch, delete, deletecollection.
    pub verb: String,
    /// API group, `""` for core.
    pub group: String,
    /// The resource with its subresource (`pods/log`, `pods/portforward`); empty for non-resource
    /// paths (discovery, `/version`, `/openapi/…`).
    pub resource: String,
    pub namespace: Option<String>,
    pub name: Option<String>,
    /// The HTTP status of the answer (200 for a watch that started).
    pub status: u16,
    pub method: String,
    /// Path and query as received.
    pub path: String,
}

impl RequestRecord {
    /// Whether this was a request for a resource (not discovery or another non-resource path).
    pub fn is_resource(&self) -> bool {
        !self.resource.is_empty()
    }
}

struct Target {
    rt: &'static ResourceType,
    ns: Option<String>,
    name: Option<String>,
    sub: Option<String>,
}

enum Route {
    Static(Response),
    Resource(Target),
}

fn parse(shared: &Shared, path: &str) -> Result<Route, ApiError> {
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let ok = |v: Value| Ok(Route::Static(json_response(200, &v)));
    // The custom kinds served at this moment (those of the CRDs in the store).
    let custom = shared.store.lock().expect("store lock").custom.clone();
    let custom = custom.as_slice();
    match segs.as_slice() {
        [] => ok(json!({ "paths": ["/api", "/api/v1", "/apis", "/healthz", "/livez", "/readyz", "/version"] })),
        ["api"] => ok(discovery::api_versions(&shared.addr.to_string())),
        ["apis"] => ok(discovery::api_group_list(custom)),
        ["version"] => ok(discovery::version()),
        ["healthz" | "livez" | "readyz"] => Ok(Route::Static(text_response(200, "ok".into()))),
        ["api", "v1"] => ok(discovery::api_resource_list(custom, "", "v1")),
        ["apis", g] => discovery::api_group(custom, g).map_or_else(|| Err(ApiError::path_not_found()), ok),
        ["apis", g, v] if discovery::is_group_version(custom, g, v) => ok(discovery::api_resource_list(custom, g, v)),
        ["api", "v1", rest @ ..] => resource(custom, "", "v1", rest),
        ["apis", g, v, rest @ ..] if discovery::is_group_version(custom, g, v) => resource(custom, g, v, rest),
        _ => Err(ApiError::path_not_found()),
    }
}

fn resource(custom: &[&'static ResourceType], group: &str, version: &str, rest: &[&str]) -> Result<Route, ApiError> {
    let s = |i: usize| rest.get(i).map(|x| x.to_string());
    let find = |plural: &str| discovery::find(custom, group, version, plural);
    if rest.len() >= 3
        && rest[0] == "namespaces"
        && let Some(rt) = find(rest[2]).filter(|t| t.namespaced)
    {
        if rest.len() > 5 || (rest.len() == 5 && !rt.has_subresource(rest[4])) {
            return Err(ApiError::path_not_found());
        }
        return Ok(Route::Resource(Target { rt, ns: s(1), name: s(3), sub: s(4) }));
    }
    let rt = rest.first().and_then(|r| find(r)).ok_or_else(ApiError::path_not_found)?;
    if rt.namespaced {
        // All namespaces: only list/watch of the collection.
        if rest.len() != 1 {
            return Err(ApiError::path_not_found());
        }
        return Ok(Route::Resource(Target { rt, ns: None, name: None, sub: None }));
    }
    if rest.len() > 3 || (rest.len() == 3 && !rt.has_subresource(rest[2])) {
        return Err(ApiError::path_not_found());
    }
    Ok(Route::Resource(Target { rt, ns: None, name: s(1), sub: s(2) }))
}

fn rbac_verb(method: &Method, t: &Target, query: &HashMap<String, String>) -> &'static str {
    let watch = query.get("watch").is_some_and(|w| w == "true" || w == "1");
    match (method.as_str(), t.name.is_some()) {
        ("GET" | "HEAD", false) if watch => "watch",
        ("GET" | "HEAD", false) => "list",
        ("GET" | "HEAD", true) if watch => "watch",
        ("GET" | "HEAD", true) => "get",
        ("POST", _) => "create",
        ("PUT", _) => "update",
        ("PATCH", _) => "patch",
        ("DELETE", false) => "deletecollection",
        ("DELETE", true) => "delete",
        _ => "unknown",
    }
}

pub(crate) async fn dispatch(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    let method = req.method().clone();
    let uri = req.uri().clone();
    let path_and_query = uri.path_and_query().map_or_else(|| uri.path().to_string(), |p| p.to_string());
    let query: HashMap<String, String> = Query::try_from_uri(&uri).map(|q| q.0).unwrap_or_default();
    let mut record = RequestRecord {
        verb: if method == Method::GET { "get".into() } else { method.as_str().to_lowercase() },
        group: String::new(),
        resource: String::new(),
        namespace: None,
        name: None,
        status: 0,
        method: method.to_string(),
        path: path_and_query,
    };
    let response = match parse(&shared, uri.path()) {
        Err(e) => e.response(),
        Ok(Route::Static(r)) => r,
        Ok(Route::Resource(t)) => {
            let verb = rbac_verb(&method, &t, &query);
            record.verb = verb.into();
            record.group = t.rt.group.into();
            record.resource = match &t.sub {
                Some(sub) => format!("{}/{sub}", t.rt.plural),
                None => t.rt.plural.into(),
            };
            record.namespace = t.ns.clone();
            record.name = t.name.clone();
            let decision = shared.faults.decide(verb, t.rt.group, &record.resource, t.ns.as_deref(), t.name.as_deref());
            if !decision.delay.is_zero() {
                tokio::time::sleep(decision.delay).await;
            }
            match decision.error {
                Some(e) => e.response(),
                None => {
                    let response = handle(&shared, &method, verb, t, &query, req, decision.conflict).await;
                    match decision.after_write {
                        Some(after) if response.status().is_success() => spoiled(after),
                        _ => response,
                    }
                }
            }
        }
    };
    record.status = response.status().as_u16();
    shared.requests.lock().expect("requests lock").push(record);
    response
}

/// The answer of a request that was carried out, spoiled as the fault says: an error, or a
/// response whose body breaks off (hyper then closes the connection mid-answer).
fn spoiled(after: AfterWrite) -> Response {
    match after {
        AfterWrite::Fail(e) => e.response(),
        AfterWrite::Drop => {
            let broken = futures::stream::once(async {
                Err::<axum::body::Bytes, std::io::Error>(std::io::Error::other("connection dropped by the fake"))
            });
            Response::builder()
                .status(200)
                .header("content-type", "application/json")
                .header("content-length", "4096")
                .body(axum::body::Body::from_stream(broken))
                .expect("a valid response")
        }
    }
}

async fn body_json(req: Request) -> Result<Value, ApiError> {
    let bytes = axum::body::to_bytes(req.into_body(), 3 * 1024 * 1024)
        .await
        .map_err(|_| ApiError::new(413, "RequestEntityTooLarge", "the request is too large (limit: 3145728 bytes)"))?;
    if bytes.is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::bad_request(format!(
            "the body of the request was in an unknown format - accepted media types include: application/json, \
             application/yaml, application/vnd.kubernetes.protobuf ({e})"
        ))
    })
}

fn dry_run(query: &HashMap<String, String>) -> bool {
    query.get("dryRun").is_some_and(|d| d == "All")
}

fn write_result(r: Result<Value, ApiError>, code: u16) -> Response {
    match r {
        Ok(v) => json_response(code, &v),
        Err(e) => e.response(),
    }
}

async fn handle(
    shared: &Arc<Shared>,
    method: &Method,
    verb: &str,
    t: Target,
    query: &HashMap<String, String>,
    req: Request,
    conflict: bool,
) -> Response {
    let rt = t.rt;
    let ns = t.ns.clone().unwrap_or_default();
    // kubectl get asks for a Table; the fake makes one for custom kinds (from their printer
    // columns) and answers plain objects for built-in kinds, which kubectl prints itself.
    let table = rt.is_custom()
        && req.headers().get(header::ACCEPT).and_then(|a| a.to_str().ok()).is_some_and(super::crds::wants_table);
    match (verb, t.sub.as_deref()) {
        ("list", None) => list(shared, rt, t.ns.as_deref(), query, table),
        ("watch", None) => start_watch(shared, rt, &t, query),
        ("get", None | Some("status")) => {
            let name = t.name.as_deref().unwrap_or_default();
            let store = shared.store.lock().expect("store lock");
            match store.get(&Key::new(rt, &ns, name)) {
                Some(obj) if table && t.sub.is_none() => {
                    let meta = json!({ "resourceVersion": store.rv().to_string() });
                    let body = super::crds::table(
                        store.crd_of(rt),
                        rt,
                        std::slice::from_ref(obj),
                        meta,
                        query.get("includeObject").map(String::as_str),
                    );
                    table_response(&body)
                }
                Some(obj) => json_response(200, obj),
                None => ApiError::not_found(rt, name).response(),
            }
        }
        ("get", Some("log")) => super::kubelet::logs(shared, &ns, t.name.as_deref().unwrap_or_default(), query),
        ("get", Some("portforward"))
            if super::portforward::serves(shared, &ns, t.name.as_deref().unwrap_or_default()) =>
        {
            super::portforward::upgrade(shared, &ns, t.name.as_deref().unwrap_or_default(), query, req)
        }
        (
            _,
            Some(
                sub @ ("portforward" | "exec" | "attach" | "eviction" | "binding" | "proxy" | "scale" | "token"
                | "finalize"),
            ),
        ) => ApiError::new(
            501,
            "NotImplemented",
            format!(
                "{}/{sub} is not modelled by the fake API server (tests/support/fake_kube); the request was recorded",
                rt.plural
            ),
        )
        .response(),
        ("create", None) if t.name.is_none() => {
            let body = match body_json(req).await {
                Ok(b) => b,
                Err(e) => return e.response(),
            };
            if conflict {
                return ApiError::conflict(rt, name_of(&body)).response();
            }
            if rt.namespaced && !dry_run(query) && shared.store.lock().expect("store lock").terminating_namespace(&ns) {
                return ApiError {
                    details: Some(json!({"name": name_of(&body), "kind": rt.plural})),
                    ..ApiError::new(
                        403,
                        "Forbidden",
                        format!(
                            "{} \"{}\" is forbidden: unable to create new content in namespace {ns} because it is being terminated",
                            rt.qualified(),
                            name_of(&body)
                        ),
                    )
                }
                .response();
            }
            let r = shared.write(|s| s.create(rt, &ns, body, dry_run(query)));
            write_result(r, 201)
        }
        ("update", None | Some("status")) => {
            let body = match body_json(req).await {
                Ok(b) => b,
                Err(e) => return e.response(),
            };
            let name = t.name.clone().unwrap_or_default();
            let r = shared.write(|s| {
                s.update(rt, &ns, &name, t.sub.as_deref(), dry_run(query), |o| {
                    *o = body;
                    Ok(())
                })
            });
            write_result(r, 200)
        }
        ("patch", None | Some("status")) => {
            let ct = req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default();
            let kind = match ct.split(';').next().unwrap_or_default().trim() {
                "application/merge-patch+json" => PatchKind::Merge,
                "application/strategic-merge-patch+json" => PatchKind::Strategic,
                "application/json-patch+json" => PatchKind::Json,
                "application/apply-patch+yaml" | "application/apply-patch+cbor" => PatchKind::Apply,
                other => {
                    return ApiError::new(
                        415,
                        "UnsupportedMediaType",
                        format!(
                            "the body of the request was in an unknown format - accepted media types include: \
                             application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, \
                             application/strategic-merge-patch+json (got {other:?})"
                        ),
                    )
                    .response();
                }
            };
            if kind == PatchKind::Strategic && rt.is_custom() {
                // As the real API server: custom resources have no patch strategies.
                return ApiError::new(
                    415,
                    "UnsupportedMediaType",
                    "the body of the request was in an unknown format - accepted media types include: \
                     application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml",
                )
                .response();
            }
            if kind == PatchKind::Apply && !query.contains_key("fieldManager") {
                return ApiError::bad_request("PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch").response();
            }
            let body = match body_json(req).await {
                Ok(b) => b,
                Err(e) => return e.response(),
            };
            let name = t.name.clone().unwrap_or_default();
            match shared.write(|s| s.patch(rt, &ns, &name, (kind, &body), t.sub.as_deref(), dry_run(query))) {
                Ok((obj, created)) => json_response(if created { 201 } else { 200 }, &obj),
                Err(e) => e.response(),
            }
        }
        ("delete", None) => {
            let body = match body_json(req).await {
                Ok(b) => b,
                Err(e) => return e.response(),
            };
            let opts = match delete_opts(&body, query) {
                Ok(o) => o,
                Err(e) => return e.response(),
            };
            let name = t.name.clone().unwrap_or_default();
            let orphan_false = body["orphanDependents"].as_bool() == Some(false);
            match shared.write(|s| s.delete(rt, &ns, &name, &opts)) {
                Ok(Deleted::Gone(obj)) if rt.returns_deleted_object => json_response(200, &obj),
                Ok(Deleted::Gone(obj)) => json_response(200, &status::success(rt, &name, super::store::uid_of(&obj))),
                Ok(Deleted::Pending(obj)) => json_response(if orphan_false { 202 } else { 200 }, &obj),
                Err(e) => e.response(),
            }
        }
        ("deletecollection", None) => {
            let body = match body_json(req).await {
                Ok(b) => b,
                Err(e) => return e.response(),
            };
            let opts = match delete_opts(&body, query) {
                Ok(o) => o,
                Err(e) => return e.response(),
            };
            let (labels, fields) = match selectors(rt, query) {
                Ok(s) => s,
                Err(e) => return e.response(),
            };
            let items = shared.write(|s| {
                let names: Vec<String> = s
                    .list(rt.id(), t.ns.as_deref())
                    .into_iter()
                    .filter(|(_, o)| labels.matches(o) && fields.matches(o))
                    .map(|(k, _)| k.name.clone())
                    .collect();
                names
                    .iter()
                    .filter_map(|n| match s.delete(rt, &ns, n, &opts) {
                        Ok(Deleted::Gone(o) | Deleted::Pending(o)) => Some(o),
                        Err(_) => None,
                    })
                    .collect::<Vec<_>>()
            });
            let rv = shared.store.lock().expect("store lock").rv();
            json_response(200, &list_body(rt, rv, items, None, None))
        }
        _ => ApiError::method_not_allowed(method.as_str()).response(),
    }
}

fn delete_opts(body: &Value, query: &HashMap<String, String>) -> Result<DeleteOpts, ApiError> {
    let policy =
        body["propagationPolicy"].as_str().map(String::from).or_else(|| query.get("propagationPolicy").cloned());
    let mut propagation = match policy.as_deref() {
        None => None,
        Some("Orphan") => Some(Propagation::Orphan),
        Some("Background") => Some(Propagation::Background),
        Some("Foreground") => Some(Propagation::Foreground),
        Some(other) => {
            return Err(ApiError::new(
                422,
                "Invalid",
                format!(
                    "DeleteOptions.meta.k8s.io \"\" is invalid: propagationPolicy: Unsupported value: \"{other}\": supported \
                     values: \"Foreground\", \"Background\", \"Orphan\", \"nil\""
                ),
            ));
        }
    };
    match body["orphanDependents"].as_bool() {
        Some(true) => propagation = Some(Propagation::Orphan),
        Some(false) if propagation.is_none() => propagation = Some(Propagation::Background),
        _ => {}
    }
    let grace =
        body["gracePeriodSeconds"].as_i64().or_else(|| query.get("gracePeriodSeconds").and_then(|g| g.parse().ok()));
    let dry = body["dryRun"].as_array().is_some_and(|a| a.iter().any(|d| d == "All")) || dry_run(query);
    Ok(DeleteOpts {
        propagation,
        grace_seconds: grace,
        precondition_uid: body["preconditions"]["uid"].as_str().map(String::from),
        precondition_rv: body["preconditions"]["resourceVersion"].as_str().map(String::from),
        dry_run: dry,
    })
}

fn selectors(rt: &ResourceType, query: &HashMap<String, String>) -> Result<(LabelSelector, FieldSelector), ApiError> {
    let labels = LabelSelector::parse(query.get("labelSelector").map_or("", String::as_str))
        .map_err(|e| ApiError::bad_request(format!("unable to parse requirement: {e}")))?;
    let fields = FieldSelector::parse(query.get("fieldSelector").map_or("", String::as_str), rt)
        .map_err(ApiError::bad_request)?;
    Ok((labels, fields))
}

fn list_body(rt: &ResourceType, rv: u64, items: Vec<Value>, cont: Option<String>, remaining: Option<usize>) -> Value {
    let items: Vec<Value> = items
        .into_iter()
        .map(|mut o| {
            // Items of a list carry no apiVersion/kind, as with the real API server (but for
            // custom resources, which it serves from unstructured storage).
            if !rt.is_custom()
                && let Some(m) = o.as_object_mut()
            {
                m.remove("apiVersion");
                m.remove("kind");
            }
            o
        })
        .collect();
    let mut meta = json!({ "resourceVersion": rv.to_string() });
    if let Some(c) = cont {
        meta["continue"] = json!(c);
    }
    if let Some(r) = remaining {
        meta["remainingItemCount"] = json!(r);
    }
    json!({ "kind": format!("{}List", rt.kind), "apiVersion": rt.api_version(), "metadata": meta, "items": items })
}

fn hex(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<String> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    let bytes: Option<Vec<u8>> =
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect();
    String::from_utf8(bytes?).ok()
}

fn table_response(body: &Value) -> Response {
    let mut r = json_response(200, body);
    r.headers_mut()
        .insert(header::CONTENT_TYPE, header::HeaderValue::from_static("application/json;as=Table;v=v1;g=meta.k8s.io"));
    r
}

fn list(
    shared: &Arc<Shared>,
    rt: &ResourceType,
    ns: Option<&str>,
    query: &HashMap<String, String>,
    table: bool,
) -> Response {
    let (labels, fields) = match selectors(rt, query) {
        Ok(s) => s,
        Err(e) => return e.response(),
    };
    // The continue token is the (namespace, name) of the last item sent.
    let after: Option<(String, String)> = match query.get("continue").filter(|c| !c.is_empty()) {
        None => None,
        Some(c) => match unhex(c).and_then(|s| s.split_once('\0').map(|(a, b)| (a.to_string(), b.to_string()))) {
            Some(pos) => Some(pos),
            None => {
                return ApiError::bad_request("continue key is not valid: incorrect encoded start resourceVersion")
                    .response();
            }
        },
    };
    let limit = query.get("limit").and_then(|l| l.parse::<usize>().ok()).filter(|l| *l > 0);
    let store = shared.store.lock().expect("store lock");
    let matching: Vec<(&Key, &Value)> = store
        .list(rt.id(), ns)
        .into_iter()
        .filter(|(k, _)| after.as_ref().is_none_or(|(a_ns, a_name)| (&k.ns, &k.name) > (a_ns, a_name)))
        .filter(|(_, o)| labels.matches(o) && fields.matches(o))
        .collect();
    let (page, cont, remaining) = match limit {
        Some(l) if matching.len() > l => {
            let last = matching[l - 1].0;
            (&matching[..l], Some(hex(&format!("{}\0{}", last.ns, last.name))), Some(matching.len() - l))
        }
        _ => (&matching[..], None, None),
    };
    let items: Vec<Value> = page.iter().map(|(_, o)| (*o).clone()).collect();
    if table {
        let include = query.get("includeObject").map(String::as_str);
        let meta = list_body(rt, store.rv(), Vec::new(), cont, remaining)["metadata"].clone();
        return table_response(&super::crds::table(store.crd_of(rt), rt, &items, meta, include));
    }
    json_response(200, &list_body(rt, store.rv(), items, cont, remaining))
}

fn start_watch(
    shared: &Arc<Shared>,
    rt: &'static ResourceType,
    t: &Target,
    query: &HashMap<String, String>,
) -> Response {
    let (labels, mut fields) = match selectors(rt, query) {
        Ok(s) => s,
        Err(e) => return e.response(),
    };
    if let Some(name) = &t.name {
        // The deprecated watch of one object by name is a metadata.name field selector.
        match FieldSelector::parse(&format!("metadata.name={name}"), rt) {
            Ok(f) => fields = f,
            Err(e) => return ApiError::bad_request(e).response(),
        }
    }
    let resource_version = match query.get("resourceVersion").map(String::as_str) {
        None | Some("") | Some("0") => None,
        Some(rv) => match rv.parse::<u64>() {
            Ok(n) => Some(n),
            Err(_) => return ApiError::bad_request(format!("invalid resource version: {rv}")).response(),
        },
    };
    let timeout = query.get("timeoutSeconds").and_then(|t| t.parse::<u64>().ok()).unwrap_or(1800);
    let p = WatchParams {
        ty: rt.id(),
        ns: t.ns.clone(),
        labels,
        fields,
        resource_version,
        timeout: Duration::from_secs(timeout),
        bookmarks: query.get("allowWatchBookmarks").is_some_and(|b| b == "true"),
        send_initial_events: query.get("sendInitialEvents").is_some_and(|b| b == "true"),
    };
    watch::respond(shared.clone(), p)
}

/// A response body that is plain text (pod logs).
pub(crate) fn plain(text: String) -> Response {
    Response::builder()
        .status(200)
        .header(header::CONTENT_TYPE, "text/plain")
        .body(Body::from(text))
        .expect("valid response")
}
