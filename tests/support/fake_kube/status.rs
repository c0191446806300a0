//! `metav1.Status` bodies, shaped exactly like the real API server's (message wording included),
//! so that `kube::Error::Api(s)` and its `is_not_found()`/`is_already_exists()`/… work as against a cluster.

use axum::{
    body::Body,
    http::{StatusCode, header},
    response::Response,
};
use serde_json::{Value, json};

use super::discovery::ResourceType;

/// A failed request: the HTTP code plus the `Status` the API server sends with it.
#[derive(Debug, Clone)]
pub(crate) struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    pub details: Option<Value>,
}

/// One field error of a 422 Invalid answer.
#[derive(Debug, Clone)]
pub(crate) struct FieldError {
    pub field: String,
    /// `FieldValueInvalid`, `FieldValueRequired`, `FieldValueNotSupported`, `FieldValueTooLong`, `FieldValueForbidden`
    pub reason: &'static str,
    /// What follows `field: ` in the message, e.g. `Invalid value: "X": a lowercase RFC 1123 …`.
    pub detail: String,
}

impl FieldError {
    pub fn invalid(field: impl Into<String>, value: &str, detail: &str) -> Self {
        FieldError {
            field: field.into(),
            reason: "FieldValueInvalid",
            detail: format!("Invalid value: {}: {detail}", json!(value)),
        }
    }
    pub fn required(field: impl Into<String>, detail: &str) -> Self {
        let detail = if detail.is_empty() { "Required value".to_string() } else { format!("Required value: {detail}") };
        FieldError { field: field.into(), reason: "FieldValueRequired", detail }
    }
    pub fn unsupported(field: impl Into<String>, value: &str, supported: &[&str]) -> Self {
        let supported: Vec<String> = supported.iter().map(|s| json!(s).to_string()).collect();
        FieldError {
            field: field.into(),
            reason: "FieldValueNotSupported",
            detail: format!("Unsupported value: {}: supported values: {}", json!(value), supported.join(", ")),
        }
    }
    pub fn too_long(field: impl Into<String>, max: usize) -> Self {
        FieldError {
            field: field.into(),
            reason: "FieldValueTooLong",
            detail: format!("Too long: must have at most {max} bytes"),
        }
    }
    pub fn immutable(field: impl Into<String>) -> Self {
        FieldError { field: field.into(), reason: "FieldValueInvalid", detail: "field is immutable".into() }
    }
    pub fn forbidden(field: impl Into<String>, detail: &str) -> Self {
        FieldError { field: field.into(), reason: "FieldValueForbidden", detail: format!("Forbidden: {detail}") }
    }
}

fn details(rt: &ResourceType, name: &str) -> Value {
    let mut d = json!({ "name": name, "kind": rt.plural });
    if !rt.group.is_empty() {
        d["group"] = json!(rt.group);
    }
    d
}

impl ApiError {
    pub fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        ApiError { code, reason, message: message.into(), details: None }
    }

    /// `jobs.batch "x" not found`
    pub fn not_found(rt: &ResourceType, name: &str) -> Self {
        ApiError {
            details: Some(details(rt, name)),
            ..Self::new(404, "NotFound", format!("{} \"{name}\" not found", rt.qualified()))
        }
    }

    /// `namespaces "x" not found` (a create in a namespace that does not exist).
    pub fn namespace_not_found(ns: &str) -> Self {
        ApiError {
            details: Some(json!({ "name": ns, "kind": "namespaces" })),
            ..Self::new(404, "NotFound", format!("namespaces \"{ns}\" not found"))
        }
    }

    /// `jobs.batch "x" already exists`
    pub fn already_exists(rt: &ResourceType, name: &str) -> Self {
        ApiError {
            details: Some(details(rt, name)),
            ..Self::new(409, "AlreadyExists", format!("{} \"{name}\" already exists", rt.qualified()))
        }
    }

    /// The optimistic-concurrency conflict of an update with a stale resourceVersion.
    pub fn conflict(rt: &ResourceType, name: &str) -> Self {
        ApiError {
            details: Some(details(rt, name)),
            ..Self::new(
                409,
                "Conflict",
                format!(
                    "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your \
                     changes to the latest version and try again",
                    rt.qualified()
                ),
            )
        }
    }

    /// 422 with one cause per field error; the message lists them like the API server does.
    pub fn invalid(rt: &ResourceType, name: &str, errors: &[FieldError]) -> Self {
        let parts: Vec<String> = errors.iter().map(|e| format!("{}: {}", e.field, e.detail)).collect();
        let listed = if parts.len() == 1 { parts[0].clone() } else { format!("[{}]", parts.join(", ")) };
        let qualified_kind =
            if rt.group.is_empty() { rt.kind.to_string() } else { format!("{}.{}", rt.kind, rt.group) };
        let mut d = json!({
            "name": name,
            "kind": rt.kind,
            "causes": errors.iter().map(|e| json!({"reason": e.reason, "message": e.detail, "field": e.field}))
                .collect::<Vec<_>>(),
        });
        if !rt.group.is_empty() {
            d["group"] = json!(rt.group);
        }
        ApiError {
            details: Some(d),
            ..Self::new(422, "Invalid", format!("{qualified_kind} \"{name}\" is invalid: {listed}"))
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    /// RBAC's wording: `jobs.batch "x" is forbidden: User "…" cannot get resource "jobs" in API group "batch" in the namespace "ns"`.
    pub fn forbidden(verb: &str, group: &str, resource: &str, ns: Option<&str>, name: Option<&str>) -> Self {
        let (res, sub) = resource.split_once('/').map_or((resource, None), |(r, s)| (r, Some(s)));
        let qualified = if group.is_empty() { res.to_string() } else { format!("{res}.{group}") };
        let subject = match name {
            Some(n) => format!("{qualified} \"{n}\" is forbidden"),
            None => format!("{qualified} is forbidden"),
        };
        let scope = match ns {
            Some(ns) => format!("in the namespace \"{ns}\""),
            None => "at the cluster scope".to_string(),
        };
        let sub = sub.map(|s| format!("/{s}")).unwrap_or_default();
        let mut d = json!({ "kind": res });
        if let Some(n) = name {
            d["name"] = json!(n);
        }
        if !group.is_empty() {
            d["group"] = json!(group);
        }
        ApiError {
            details: Some(d),
            ..Self::new(
                403,
                "Forbidden",
                format!(
                    "{subject}: User \"system:serviceaccount:default:fake\" cannot {verb} resource \"{res}{sub}\" in API \
                     group \"{group}\" {scope}"
                ),
            )
        }
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(500, "InternalError", message)
    }

    /// What the API server answers for a path it has no handler for.
    pub fn path_not_found() -> Self {
        ApiError {
            details: Some(json!({})),
            ..Self::new(404, "NotFound", "the server could not find the requested resource")
        }
    }

    pub fn method_not_allowed(method: &str) -> Self {
        Self::new(
            405,
            "MethodNotAllowed",
            format!("the server does not allow this method on the requested resource ({method})"),
        )
    }

    /// The 410 a watch from a compacted resourceVersion gets (as an ERROR watch event).
    pub fn gone(requested: u64, oldest: u64) -> Self {
        Self::new(410, "Expired", format!("too old resource version: {requested} ({oldest})"))
    }

    pub fn to_json(&self) -> Value {
        let mut v = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(d) = &self.details {
            v["details"] = d.clone();
        }
        v
    }

    pub fn response(&self) -> Response {
        json_response(self.code, &self.to_json())
    }
}

/// The `Success` Status a DELETE answers with for kinds that do not return the deleted object.
pub(crate) fn success(rt: &ResourceType, name: &str, uid: &str) -> Value {
    let mut d = details(rt, name);
    d["uid"] = json!(uid);
    json!({ "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": d })
}

pub(crate) fn json_response(code: u16, body: &Value) -> Response {
    let mut bytes = serde_json::to_vec(body).unwrap_or_default();
    bytes.push(b'\n');
    Response::builder()
        .status(StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(bytes))
        .expect("valid response")
}

pub(crate) fn text_response(code: u16, text: String) -> Response {
    Response::builder()
        .status(StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header(header::CONTENT_TYPE, "text/plain")
        .body(Body::from(text))
        .expect("valid response")
}
