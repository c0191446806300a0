//! The object store: every object as JSON under (type, namespace, name), one global
//! resourceVersion counter bumped by every write, and the write history that watches replay.
//! The API verbs' semantics (create/update/patch/delete, finalizers, graceful pod deletion) live
//! here so that the HTTP routes, the controllers and the test-facing helpers share them.

use std::{
    collections::{BTreeMap, HashMap, HashSet, VecDeque},
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use rand::RngExt;
use serde_json::{Value, json};

use super::{
    admission, crds,
    discovery::{self, ResourceType, TypeId},
    patch,
    status::ApiError,
};

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct Key {
    pub ty: TypeId,
    /// Empty for cluster-scoped kinds.
    pub ns: String,
    pub name: String,
}

impl Key {
    pub fn new(rt: &ResourceType, ns: &str, name: &str) -> Self {
        Key { ty: rt.id(), ns: if rt.namespaced { ns.to_string() } else { String::new() }, name: name.to_string() }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ChangeType {
    Added,
    Modified,
    Deleted,
}

/// One write, as watches replay it.
#[derive(Debug, Clone)]
pub(crate) struct Change {
    pub rv: u64,
    pub ty: TypeId,
    pub ns: String,
    pub kind: ChangeType,
    pub obj: Arc<Value>,
    /// The object before a MODIFIED write (label-selector watches turn it into ADDED/DELETED).
    pub old: Option<Arc<Value>>,
}

/// Log lines of one pod: the running container's and the previous (crashed) one's.
#[derive(Debug, Clone, Default)]
pub(crate) struct PodLogs {
    pub current: Vec<String>,
    pub previous: Option<Vec<String>>,
    /// Lines by container name, from the process kubelet (which runs init containers too);
    /// empty for scripted pods, whose containers share `current`.
    pub by_container: HashMap<String, Vec<String>>,
}

/// The PATCH content types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PatchKind {
    Merge,
    Strategic,
    Json,
    /// Server-side apply, approximated as a merge patch that creates the object when absent.
    Apply,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Propagation {
    Orphan,
    Background,
    Foreground,
}

#[derive(Debug, Clone, Default)]
pub(crate) struct DeleteOpts {
    pub propagation: Option<Propagation>,
    pub grace_seconds: Option<i64>,
    pub precondition_uid: Option<String>,
    pub precondition_rv: Option<String>,
    pub dry_run: bool,
}

/// What a DELETE did.
#[derive(Debug, Clone)]
pub(crate) enum Deleted {
    /// Removed from the store (the last state).
    Gone(Value),
    /// Still there with a deletionTimestamp: finalizers or a pod's grace period pending.
    Pending(Value),
}

pub(crate) struct Store {
    rv: u64,
    objects: BTreeMap<Key, Value>,
    uids: HashMap<String, Key>,
    history: VecDeque<Change>,
    history_limit: usize,
    /// Watches from a resourceVersion older than this get 410 Gone.
    compacted: u64,
    pub logs: HashMap<String, PodLogs>,
    /// Uids of the Jobs and Pods the simulated controllers and kubelet handle (those created through
    /// the API or by the job controller, not those inserted directly by a test).
    pub managed: HashSet<String>,
    /// Pods in their grace period: uid → when they are removed.
    pub terminating: HashMap<String, Instant>,
    /// Terminating pods whose processes still run (process kubelet): the garbage collector keeps
    /// them until the kubelet lets go, as the API server waits for the kubelet's final delete.
    pub held: HashSet<String>,
    /// Managed pods created since the last drain: (namespace, name, uid), for the kubelet to start.
    pub new_pods: Vec<(String, String, String)>,
    /// How long a pod stays terminating after a graceful delete (capped by its grace period).
    pub pod_grace: Duration,
    /// How long a deleted namespace keeps its objects.
    pub namespace_cleanup: Duration,
    next_pod_ip: u32,
    next_cluster_ip: u32,
    /// The custom kinds this store's CRDs define (kept in step with them by every CRD write).
    pub custom: Vec<&'static ResourceType>,
}

pub(crate) fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

pub(crate) fn rfc3339_in(secs: i64) -> String {
    let t = if secs >= 0 {
        SystemTime::now() + Duration::from_secs(secs as u64)
    } else {
        SystemTime::now() - Duration::from_secs(secs.unsigned_abs())
    };
    humantime::format_rfc3339_seconds(t).to_string()
}

pub(crate) fn new_uid() -> String {
    let b: [u8; 16] = rand::rng().random();
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("{}-{}-4{}-a{}-{}", &h[0..8], &h[8..12], &h[13..16], &h[17..20], &h[20..32])
}

/// The suffix alphabet of `generateName` (no vowels, no confusable digits), 5 characters.
pub(crate) fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut rng = rand::rng();
    (0..5).map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char).collect()
}

pub(crate) fn meta_str<'a>(obj: &'a Value, field: &str) -> Option<&'a str> {
    obj["metadata"][field].as_str()
}

pub(crate) fn uid_of(obj: &Value) -> &str {
    meta_str(obj, "uid").unwrap_or_default()
}

pub(crate) fn name_of(obj: &Value) -> &str {
    meta_str(obj, "name").unwrap_or_default()
}

pub(crate) fn finalizers(obj: &Value) -> Vec<String> {
    obj["metadata"]["finalizers"]
        .as_array()
        .map(|a| a.iter().filter_map(|f| f.as_str().map(String::from)).collect())
        .unwrap_or_default()
}

pub(crate) fn set_finalizers(obj: &mut Value, f: &[String]) {
    if f.is_empty() {
        if let Some(m) = obj["metadata"].as_object_mut() {
            m.remove("finalizers");
        }
    } else {
        obj["metadata"]["finalizers"] = json!(f);
    }
}

pub(crate) fn owner_uids(obj: &Value) -> Vec<String> {
    obj["metadata"]["ownerReferences"]
        .as_array()
        .map(|a| a.iter().filter_map(|r| r["uid"].as_str().map(String::from)).collect())
        .unwrap_or_default()
}

fn rv_of(obj: &Value) -> Option<&str> {
    meta_str(obj, "resourceVersion")
}

/// The default propagation of a DELETE without one: batch/v1 Jobs orphan their pods (the legacy
/// default the API keeps for them), everything else cascades in the background.
fn default_propagation(rt: &ResourceType) -> Propagation {
    if rt.group == "batch" && rt.plural == "jobs" { Propagation::Orphan } else { Propagation::Background }
}

impl Store {
    pub fn new(history_limit: usize, pod_grace: Duration, namespace_cleanup: Duration) -> Self {
        Store {
            rv: 0,
            objects: BTreeMap::new(),
            uids: HashMap::new(),
            history: VecDeque::new(),
            history_limit: history_limit.max(1),
            compacted: 0,
            logs: HashMap::new(),
            managed: HashSet::new(),
            terminating: HashMap::new(),
            new_pods: Vec::new(),
            held: HashSet::new(),
            pod_grace,
            namespace_cleanup,
            next_pod_ip: 0,
            next_cluster_ip: 0,
            custom: Vec::new(),
        }
    }

    pub fn rv(&self) -> u64 {
        self.rv
    }

    pub fn compacted(&self) -> u64 {
        self.compacted
    }

    /// Forget the watch history: watches from any older resourceVersion now get 410 Gone.
    pub fn compact(&mut self) {
        self.history.clear();
        self.compacted = self.rv;
    }

    pub fn history_after(&self, rv: u64) -> impl Iterator<Item = &Change> {
        let start = self.history.partition_point(|c| c.rv <= rv);
        self.history.range(start..)
    }

    pub fn get(&self, key: &Key) -> Option<&Value> {
        self.objects.get(key)
    }

    pub fn by_uid(&self, uid: &str) -> Option<(&Key, &Value)> {
        let key = self.uids.get(uid)?;
        self.objects.get(key).map(|v| (key, v))
    }

    pub fn uid_exists(&self, uid: &str) -> bool {
        self.uids.contains_key(uid)
    }

    pub fn namespace_exists(&self, ns: &str) -> bool {
        let rt = discovery::by_resource("", "namespaces").expect("namespaces type");
        self.objects.contains_key(&Key::new(rt, "", ns))
    }

    pub fn terminating_namespace(&self, ns: &str) -> bool {
        let rt = discovery::by_resource("", "namespaces").expect("namespaces type");
        self.objects.get(&Key::new(rt, "", ns)).is_some_and(|n| n["metadata"].get("deletionTimestamp").is_some())
    }

    /// The objects of one type, in one namespace or (None) all, ordered by namespace and name.
    pub fn list(&self, ty: TypeId, ns: Option<&str>) -> Vec<(&Key, &Value)> {
        let lo = Key { ty, ns: ns.unwrap_or_default().to_string(), name: String::new() };
        self.objects.range(lo..).take_while(|(k, _)| k.ty == ty && ns.is_none_or(|n| k.ns == n)).collect()
    }

    pub fn all(&self) -> impl Iterator<Item = (&Key, &Value)> {
        self.objects.iter()
    }

    pub fn pod_ip(&mut self) -> String {
        self.next_pod_ip += 1;
        format!("10.0.{}.{}", self.next_pod_ip / 250, self.next_pod_ip % 250 + 2)
    }

    pub fn cluster_ip(&mut self) -> String {
        self.next_cluster_ip += 1;
        format!("10.96.{}.{}", self.next_cluster_ip / 250, self.next_cluster_ip % 250 + 2)
    }

    fn record(&mut self, key: &Key, kind: ChangeType, obj: &Value, old: Option<Value>) {
        self.history.push_back(Change {
            rv: self.rv,
            ty: key.ty,
            ns: key.ns.clone(),
            kind,
            obj: Arc::new(obj.clone()),
            old: old.map(Arc::new),
        });
        while self.history.len() > self.history_limit {
            if let Some(c) = self.history.pop_front() {
                self.compacted = c.rv;
            }
        }
    }

    /// Store a new object as is (metadata already filled), bumping the resourceVersion.
    pub fn raw_insert(&mut self, key: Key, mut obj: Value) -> Value {
        self.rv += 1;
        obj["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        self.uids.insert(uid_of(&obj).to_string(), key.clone());
        self.record(&key, ChangeType::Added, &obj, None);
        let crd = key.ty == crds::crd_type().id();
        self.objects.insert(key, obj.clone());
        if crd {
            self.sync_custom();
        }
        obj
    }

    /// Replace a stored object, bumping the resourceVersion.
    pub fn raw_update(&mut self, key: &Key, mut obj: Value) -> Value {
        self.rv += 1;
        obj["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        let old = self.objects.insert(key.clone(), obj.clone());
        self.record(key, ChangeType::Modified, &obj, old);
        if key.ty == crds::crd_type().id() {
            self.sync_custom();
        }
        obj
    }

    /// Serve the kinds the stored CRDs define now. A kind whose definition changed (short names,
    /// subresources, categories) keeps its objects under its new type; the objects of a kind no
    /// CRD defines any more are removed (DELETED events).
    fn sync_custom(&mut self) {
        let crd_rt = crds::crd_type();
        let defs: Vec<_> = self.list(crd_rt.id(), None).into_iter().flat_map(|(_, c)| crds::defs(c)).collect();
        let new: Vec<&'static ResourceType> = defs.iter().map(discovery::intern).collect();
        let old = std::mem::replace(&mut self.custom, new.clone());
        for gone in old.into_iter().filter(|o| !new.iter().any(|n| std::ptr::eq(*n, *o))) {
            let keys: Vec<Key> = self.list(gone.id(), None).into_iter().map(|(k, _)| k.clone()).collect();
            let successor = new
                .iter()
                .find(|n| n.group == gone.group && n.version == gone.version && n.plural == gone.plural)
                .copied();
            for key in keys {
                match successor {
                    Some(to) => {
                        let obj = self.objects.remove(&key).expect("listed");
                        let moved = Key { ty: to.id(), ..key };
                        self.uids.insert(uid_of(&obj).to_string(), moved.clone());
                        self.objects.insert(moved, obj);
                    }
                    None => {
                        self.raw_remove(&key);
                    }
                }
            }
        }
    }

    /// A kind this store serves, by group, version and resource.
    pub fn served(&self, group: &str, version: &str, plural: &str) -> Option<&'static ResourceType> {
        discovery::find(&self.custom, group, version, plural)
    }

    /// The CRD that defines a custom kind.
    pub fn crd_of(&self, rt: &ResourceType) -> Option<&Value> {
        let c = rt.custom.as_ref()?;
        self.get(&Key::new(crds::crd_type(), "", c.crd))
    }

    /// Change a stored object in place; no write when `f` leaves it as it was.
    pub fn modify(&mut self, key: &Key, f: impl FnOnce(&mut Value)) -> Option<Value> {
        let mut obj = self.objects.get(key)?.clone();
        f(&mut obj);
        if self.objects.get(key) == Some(&obj) {
            return Some(obj);
        }
        Some(self.raw_update(key, obj))
    }

    /// Remove an object, bumping the resourceVersion; returns its last state.
    pub fn raw_remove(&mut self, key: &Key) -> Option<Value> {
        let obj = self.objects.remove(key)?;
        let removed = self.removed(key, obj);
        if key.ty == crds::crd_type().id() {
            self.sync_custom();
        }
        Some(removed)
    }

    fn removed(&mut self, key: &Key, mut obj: Value) -> Value {
        self.rv += 1;
        obj["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        let uid = uid_of(&obj).to_string();
        self.uids.remove(&uid);
        self.managed.remove(&uid);
        self.terminating.remove(&uid);
        self.held.remove(&uid);
        self.logs.remove(&uid);
        self.record(key, ChangeType::Deleted, &obj, None);
        obj
    }

    /// Fill the metadata a create sets (uid, creationTimestamp, namespace, generation) and store.
    /// `managed`: the controllers/kubelet take care of it.
    pub fn insert_new(&mut self, rt: &ResourceType, ns: &str, mut obj: Value, managed: bool) -> Value {
        obj["apiVersion"] = json!(rt.api_version());
        obj["kind"] = json!(rt.kind);
        if !obj["metadata"].is_object() {
            obj["metadata"] = json!({});
        }
        let m = &mut obj["metadata"];
        if rt.namespaced {
            m["namespace"] = json!(ns);
        }
        if m["uid"].as_str().is_none_or(str::is_empty) {
            m["uid"] = json!(new_uid());
        }
        if m["creationTimestamp"].as_str().is_none() {
            m["creationTimestamp"] = json!(now_rfc3339());
        }
        if (obj.get("spec").is_some() || rt.is_custom()) && obj["metadata"].get("generation").is_none() {
            obj["metadata"]["generation"] = json!(1);
        }
        let key = Key::new(rt, ns, name_of(&obj));
        let uid = uid_of(&obj).to_string();
        if managed {
            match rt.plural {
                "pods" if rt.group.is_empty() => {
                    self.managed.insert(uid.clone());
                    self.new_pods.push((key.ns.clone(), key.name.clone(), uid));
                }
                "jobs" if rt.group == "batch" => {
                    self.managed.insert(uid);
                }
                _ => {}
            }
        }
        self.raw_insert(key, obj)
    }

    /// POST: defaulting, validation, generateName, then store.
    pub fn create(&mut self, rt: &ResourceType, ns: &str, mut obj: Value, dry_run: bool) -> Result<Value, ApiError> {
        if !obj.is_object() {
            return Err(ApiError::bad_request("the body of the request was in an unknown format"));
        }
        if !obj["metadata"].is_object() {
            obj["metadata"] = json!({});
        }
        admission::check_type_meta(rt, &obj)?;
        if rt.namespaced {
            match meta_str(&obj, "namespace") {
                Some(n) if !n.is_empty() && n != ns => {
                    return Err(ApiError::bad_request(
                        "the namespace of the provided object does not match the namespace sent on the request",
                    ));
                }
                _ => {}
            }
        }
        // What the server owns is not taken from the request.
        if let Some(m) = obj["metadata"].as_object_mut() {
            for f in [
                "uid",
                "resourceVersion",
                "creationTimestamp",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "generation",
                "selfLink",
            ] {
                m.remove(f);
            }
        }
        if meta_str(&obj, "name").is_none_or(str::is_empty)
            && let Some(prefix) = meta_str(&obj, "generateName").filter(|p| !p.is_empty())
        {
            let name = format!("{prefix}{}", random_suffix());
            obj["metadata"]["name"] = json!(name);
        }
        let name = name_of(&obj).to_string();
        obj["metadata"]["uid"] = json!(new_uid());
        admission::prepare_create(rt, &mut obj, self);
        let errors = admission::validate(rt, &obj, None);
        if !errors.is_empty() {
            return Err(ApiError::invalid(rt, &name, &errors));
        }
        if rt.namespaced && !self.namespace_exists(ns) {
            return Err(ApiError::namespace_not_found(ns));
        }
        if self.crd_of(rt).is_some_and(|c| c["metadata"].get("deletionTimestamp").is_some()) {
            return Err(ApiError::new(
                405,
                "MethodNotAllowed",
                "create not allowed while custom resource definition is terminating",
            ));
        }
        if self.objects.contains_key(&Key::new(rt, ns, &name)) {
            return Err(ApiError::already_exists(rt, &name));
        }
        if dry_run {
            obj["metadata"]["creationTimestamp"] = json!(now_rfc3339());
            if rt.namespaced {
                obj["metadata"]["namespace"] = json!(ns);
            }
            return Ok(obj);
        }
        Ok(self.insert_new(rt, ns, obj, true))
    }

    fn current(&self, rt: &ResourceType, ns: &str, name: &str) -> Result<(Key, Value), ApiError> {
        let key = Key::new(rt, ns, name);
        let obj = self.objects.get(&key).cloned().ok_or_else(|| ApiError::not_found(rt, name))?;
        Ok((key, obj))
    }

    /// The common path of PUT and PATCH: `change` turns the current object into the requested one,
    /// then the server's rules apply (resourceVersion precondition, server-owned fields, status
    /// subresource, validation, generation); an update that changes nothing is not a write.
    pub fn update(
        &mut self,
        rt: &ResourceType,
        ns: &str,
        name: &str,
        subresource: Option<&str>,
        dry_run: bool,
        change: impl FnOnce(&mut Value) -> Result<(), ApiError>,
    ) -> Result<Value, ApiError> {
        let (key, old) = self.current(rt, ns, name)?;
        let mut new = old.clone();
        change(&mut new)?;
        if !new.is_object() || !new["metadata"].is_object() {
            return Err(ApiError::bad_request("the body of the request was in an unknown format"));
        }
        admission::check_type_meta(rt, &new)?;
        if let Some(rv) = rv_of(&new)
            && !rv.is_empty()
            && Some(rv) != rv_of(&old)
        {
            return Err(ApiError::conflict(rt, name));
        }
        if let Some(n) = meta_str(&new, "name")
            && n != name
        {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({n}) does not match the name on the URL ({name})"
            )));
        }
        if rt.namespaced
            && let Some(n) = meta_str(&new, "namespace")
            && !n.is_empty()
            && n != ns
        {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
        // Server-owned metadata.
        for f in [
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generation",
            "namespace",
            "name",
        ] {
            match old["metadata"].get(f) {
                Some(v) => new["metadata"][f] = v.clone(),
                None => {
                    if let Some(m) = new["metadata"].as_object_mut() {
                        m.remove(f);
                    }
                }
            }
        }
        new["apiVersion"] = old["apiVersion"].clone();
        new["kind"] = old["kind"].clone();
        match subresource {
            Some("status") => {
                // A status write changes only the status.
                let status = new.get("status").cloned();
                new = old.clone();
                match status {
                    Some(s) => new["status"] = s,
                    None => {
                        new.as_object_mut().expect("object").remove("status");
                    }
                }
            }
            Some(other) => return Err(ApiError::method_not_allowed(&format!("{other} subresource"))),
            None if rt.has_status() => match old.get("status") {
                Some(s) => new["status"] = s.clone(),
                None => {
                    new.as_object_mut().expect("object").remove("status");
                }
            },
            None => {}
        }
        admission::prepare_update(rt, &mut new, &old);
        let errors = admission::validate(rt, &new, Some(&old));
        if !errors.is_empty() {
            return Err(ApiError::invalid(rt, name, &errors));
        }
        // Built-in kinds count spec changes; custom kinds count changes to anything but metadata
        // (and status, when it is a subresource).
        let changed = if rt.is_custom() {
            let content = |o: &Value| {
                let mut o = o.clone();
                if let Some(m) = o.as_object_mut() {
                    m.remove("metadata");
                    if rt.has_status() {
                        m.remove("status");
                    }
                }
                o
            };
            content(&new) != content(&old)
        } else {
            new.get("spec").is_some() && new.get("spec") != old.get("spec")
        };
        if changed {
            let g = old["metadata"]["generation"].as_i64().unwrap_or(0) + 1;
            new["metadata"]["generation"] = json!(g);
        }
        new["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"].clone();
        if let Some(m) = new["metadata"].as_object_mut()
            && m.get("finalizers").and_then(Value::as_array).is_some_and(Vec::is_empty)
        {
            m.remove("finalizers");
        }
        if new == old || dry_run {
            return Ok(new);
        }
        let stored = self.raw_update(&key, new);
        // The last finalizer gone from an object being deleted: it goes now (pods once their grace ends).
        if stored["metadata"].get("deletionTimestamp").is_some() && finalizers(&stored).is_empty() {
            let uid = uid_of(&stored).to_string();
            if !(rt.plural == "pods" && self.terminating.get(&uid).is_some_and(|t| *t > Instant::now())) {
                return Ok(self.raw_remove(&key).unwrap_or(stored));
            }
        }
        Ok(stored)
    }

    /// PATCH; Ok((object, created)) — server-side apply creates a missing object.
    pub fn patch(
        &mut self,
        rt: &ResourceType,
        ns: &str,
        name: &str,
        (kind, body): (PatchKind, &Value),
        subresource: Option<&str>,
        dry_run: bool,
    ) -> Result<(Value, bool), ApiError> {
        if kind == PatchKind::Apply && subresource.is_none() && !self.objects.contains_key(&Key::new(rt, ns, name)) {
            let mut obj = body.clone();
            if obj["metadata"]["name"].as_str().is_none() {
                obj["metadata"]["name"] = json!(name);
            }
            return self.create(rt, ns, obj, dry_run).map(|o| (o, true));
        }
        let obj = self.update(rt, ns, name, subresource, dry_run, |obj| {
            match kind {
                PatchKind::Merge | PatchKind::Apply => patch::merge_patch(obj, body),
                PatchKind::Strategic => patch::strategic_merge_patch(obj, body),
                PatchKind::Json => patch::json_patch(obj, body).map_err(|e| {
                    ApiError::new(
                        422,
                        "Invalid",
                        format!("the server rejected our request due to an error in our request: {e}"),
                    )
                })?,
            }
            Ok(())
        })?;
        Ok((obj, false))
    }

    /// DELETE with DeleteOptions semantics: preconditions, propagation (as finalizers the garbage
    /// collector acts on), a pod's graceful termination.
    pub fn delete(&mut self, rt: &ResourceType, ns: &str, name: &str, opts: &DeleteOpts) -> Result<Deleted, ApiError> {
        let (key, obj) = self.current(rt, ns, name)?;
        if let Some(uid) = &opts.precondition_uid
            && uid != uid_of(&obj)
        {
            return Err(ApiError {
                details: Some(json!({"name": name, "kind": rt.plural})),
                ..ApiError::new(
                    409,
                    "Conflict",
                    format!(
                        "Operation cannot be fulfilled on {} \"{name}\": Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                        rt.qualified(),
                        uid_of(&obj)
                    ),
                )
            });
        }
        if let Some(rv) = &opts.precondition_rv
            && Some(rv.as_str()) != rv_of(&obj)
        {
            return Err(ApiError::conflict(rt, name));
        }
        if opts.dry_run {
            return Ok(Deleted::Gone(obj));
        }
        let uid = uid_of(&obj).to_string();
        let is_pod = rt.group.is_empty() && rt.plural == "pods";
        let spec_grace = obj["spec"]["terminationGracePeriodSeconds"].as_i64().unwrap_or(30);
        let grace = opts.grace_seconds.unwrap_or(spec_grace).max(0);
        if obj["metadata"].get("deletionTimestamp").is_some() {
            // Already terminating: a shorter grace period can hurry a pod along.
            if is_pod && grace == 0 {
                self.terminating.insert(uid, Instant::now());
            }
            return Ok(Deleted::Pending(obj));
        }
        if rt.group.is_empty() && rt.plural == "namespaces" {
            // A namespace goes Terminating; the garbage collector empties it, then removes it.
            let mut new = obj;
            new["metadata"]["deletionTimestamp"] = json!(now_rfc3339());
            new["metadata"]["deletionGracePeriodSeconds"] = json!(0);
            new["status"]["phase"] = json!("Terminating");
            self.terminating.insert(uid_of(&new).to_string(), Instant::now() + self.namespace_cleanup);
            return Ok(Deleted::Pending(self.raw_update(&key, new)));
        }
        let mut fins = finalizers(&obj);
        match opts.propagation.unwrap_or_else(|| default_propagation(rt)) {
            Propagation::Orphan => {
                if !fins.iter().any(|f| f == "orphan") {
                    fins.push("orphan".into());
                }
            }
            Propagation::Foreground => {
                if !fins.iter().any(|f| f == "foregroundDeletion") {
                    fins.push("foregroundDeletion".into());
                }
            }
            Propagation::Background => {}
        }
        let scheduled = obj["spec"]["nodeName"].as_str().is_some_and(|n| !n.is_empty());
        let graceful = is_pod && scheduled && grace > 0;
        if fins.is_empty() && !graceful {
            return Ok(Deleted::Gone(self.raw_remove(&key).expect("present")));
        }
        let mut new = obj;
        set_finalizers(&mut new, &fins);
        if graceful {
            new["metadata"]["deletionTimestamp"] = json!(rfc3339_in(grace));
            new["metadata"]["deletionGracePeriodSeconds"] = json!(grace);
            let wait = self.pod_grace.min(Duration::from_secs(grace as u64));
            self.terminating.insert(uid, Instant::now() + wait);
        } else {
            new["metadata"]["deletionTimestamp"] = json!(now_rfc3339());
            new["metadata"]["deletionGracePeriodSeconds"] = json!(0);
        }
        Ok(Deleted::Pending(self.raw_update(&key, new)))
    }
}
