//! A fake Kubernetes API server for tests and benchmarks: real HTTP on 127.0.0.1, the real wire
//! format (objects, lists, `Status` errors, newline-delimited watch streams, discovery), an
//! in-memory store with one global resourceVersion, and simulated controllers (Job controller,
//! scheduler + kubelet with failure scripts, garbage collector) so that a kube client sees what
//! it would see against a cluster. Faults can be injected at run time.
//!
//! Two kubelets, chosen per fake: the scripted one (`kubelet.rs`, the default) walks pods through
//! their states after fixed delays or a failure `Script`; the process kubelet
//! (`FakeConfig::processes(Programs)`, `process_kubelet.rs`) runs the containers as real local
//! processes on loopback pod IPs, probes them for real and serves `pods/portforward` as the
//! kube client's websocket to them (`portforward.rs`). README.md lists which tests use which and
//! the process kubelet's test seams.
//!
//! Not modelled: exec/attach, and port-forward to scripted pods (answered 501 and recorded);
//! NetworkPolicy enforcement (policies are stored and validated, traffic is not filtered);
//! authentication and RBAC (everything is allowed unless a fault says 403); admission webhooks,
//! quotas, more than one node; `resourceVersion` on GET/list (always the latest state) and list
//! snapshots across pages; server-side apply field ownership (apply = merge patch that may
//! create); protobuf, and Table output for built-in kinds; `follow=true` logs (the current lines, then the response
//! ends); event deduplication (`count` stays 1); the job-tracking pod finalizer; scripted pods'
//! containers are not marked terminated when a pod is deleted (it just goes after its grace
//! delay). Timing is wall-clock (tokio time), with
//! small default delays (`Delays`).
//!
//! Custom resources (`crds.rs`): a stored CustomResourceDefinition registers its kinds at run
//! time (discovery, generic verbs, status subresource, watches, Tables from printer columns,
//! owner GC, finalizers); schemas are not applied (no validation, pruning or conversion).
//!
//! Behaviours worth knowing: a DELETE answers like the real registry, with the object for pods,
//! services, serviceaccounts and namespaces and for anything only marked for deletion (finalizers,
//! grace period), and with a `Success` Status for other kinds once they are gone (so kube's
//! `Api::delete` gives `Right(Status)` for a Job deleted in the background, `Left(Job)` for orphan
//! or foreground); a Job deleted without a propagation policy orphans its pods; list items carry
//! no apiVersion/kind (custom resources' do, as from the real server); a create in a missing
//! namespace is 404 while a list there is empty.
//!
//! ```text
//! let fake = FakeKube::start(FakeConfig::new("ns").rule("bad-image", Script::ImagePullFailure)).await;
//! let client = fake.client("ns");                      // or fake.write_kubeconfig(dir, "ns")
//! fake.faults().fail_next("create", "jobs", 1);        // the next Job create gets a 500
//! fake.wait_until(Duration::from_secs(2), |f| f.objects::<Pod>("ns").len() == 1).await;
//! let mut resource_requests = fake.requests().into_iter().filter(|r| r.is_resource());
//! assert!(resource_requests.all(|r| rbac::allows(&r.group, &r.resource, &r.verb)));
//! ```
//!
//! Include it with `#[path = "../support/fake_kube/mod.rs"] mod fake_kube;`.

// Each including binary uses a different part of the API.
#![allow(dead_code)]

mod admission;
mod crds;
mod discovery;
mod faults;
mod gc;
mod jobs;
mod kubelet;
mod patch;
mod portforward;
mod probe;
mod process_kubelet;
mod processes;
mod programs;
mod routes;
mod selectors;
mod status;
mod store;
mod watch;

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::serve::ListenerExt;
use serde::{Serialize, de::DeserializeOwned};
use serde_json::{Value, json};
use tokio::sync::watch as tokio_watch;
use tokio_util::sync::CancellationToken;

pub use faults::Faults;
pub use kubelet::{Delays, Script};
pub use processes::{ProbeRecord, StartedProcess};
pub use programs::Programs;
pub use routes::RequestRecord;

use store::{Key, Store};

/// How the fake starts.
#[derive(Debug, Clone)]
pub struct FakeConfig {
    /// Namespaces that exist from the start (`default` is always added).
    pub namespaces: Vec<String>,
    pub delays: Delays,
    /// `(substring, script)`: the first rule whose substring occurs in a pod's container image or
    /// command line decides what its containers do; `Script::Ready` when none matches.
    pub rules: Vec<(String, Script)>,
    /// The log lines every started container prints (before a script's own lines).
    pub default_logs: Vec<String>,
    /// Writes kept for watches to replay; a watch from an older resourceVersion gets 410 Gone.
    pub history_limit: usize,
    /// How often a watch with `allowWatchBookmarks=true` gets a BOOKMARK.
    pub bookmark_interval: Duration,
    /// Run pods' containers as local processes (the process kubelet) instead of following
    /// scripts; `rules` and `default_logs` are then unused.
    pub processes: Option<Programs>,
}

impl Default for FakeConfig {
    fn default() -> Self {
        FakeConfig {
            namespaces: vec!["default".into()],
            delays: Delays::default(),
            rules: Vec::new(),
            default_logs: vec!["mcp-ephemeral bridge listening on 0.0.0.0:8080".into()],
            history_limit: 10_000,
            bookmark_interval: Duration::from_secs(1),
            processes: None,
        }
    }
}

impl FakeConfig {
    /// The defaults plus namespace `namespace`.
    pub fn new(namespace: &str) -> Self {
        let mut c = FakeConfig::default();
        if namespace != "default" {
            c.namespaces.push(namespace.into());
        }
        c
    }

    pub fn rule(mut self, substring: &str, script: Script) -> Self {
        self.rules.push((substring.into(), script));
        self
    }

    pub fn delays(mut self, delays: Delays) -> Self {
        self.delays = delays;
        self
    }

    /// Use the process kubelet: containers run as local processes, mapped through `programs`.
    pub fn processes(mut self, programs: Programs) -> Self {
        self.processes = Some(programs);
        self
    }
}

/// Settings the kubelet and controllers read at the moment they need them.
pub(crate) struct Sim {
    pub delays: Delays,
    pub rules: Vec<(String, Script)>,
    pub default_logs: Vec<String>,
    pub programs: Option<Programs>,
}

pub(crate) struct Shared {
    pub store: Mutex<Store>,
    /// The latest resourceVersion; watches, controllers and `wait_until` wake on it.
    pub changes: tokio_watch::Sender<u64>,
    pub faults: Faults,
    pub requests: Mutex<Vec<RequestRecord>>,
    pub sim: Mutex<Sim>,
    pub cancel: CancellationToken,
    pub addr: std::net::SocketAddr,
    pub bookmark_interval: Duration,
    /// The process kubelet's processes, pod networks, probes and tunnels.
    pub processes: processes::Registry,
}

impl Shared {
    /// Run `f` on the store, then wake whoever waits for changes and start the kubelet for new
    /// managed pods.
    pub fn write<R>(self: &Arc<Self>, f: impl FnOnce(&mut Store) -> R) -> R {
        let (r, rv, new_pods) = {
            let mut s = self.store.lock().expect("store lock");
            let r = f(&mut s);
            (r, s.rv(), std::mem::take(&mut s.new_pods))
        };
        self.changes.send_if_modified(|cur| {
            let newer = rv > *cur;
            if newer {
                *cur = rv;
            }
            newer
        });
        if !new_pods.is_empty() {
            let programs = self.sim.lock().expect("sim lock").programs.clone();
            for (ns, name, uid) in new_pods {
                match &programs {
                    Some(p) => self.spawn(process_kubelet::run_pod(self.clone(), ns, name, uid, p.clone())),
                    None => self.spawn(kubelet::run_pod(self.clone(), ns, name, uid)),
                }
            }
        }
        r
    }

    /// A task that ends when the fake stops.
    pub fn spawn(&self, fut: impl Future<Output = ()> + Send + 'static) {
        let cancel = self.cancel.clone();
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                tokio::select! {
                    _ = cancel.cancelled() => {}
                    _ = fut => {}
                }
            });
        }
    }
}

/// The running fake API server. Dropping it stops the server and every simulated component.
pub struct FakeKube {
    shared: Arc<Shared>,
    url: String,
}

impl Drop for FakeKube {
    fn drop(&mut self) {
        self.shared.cancel.cancel();
        self.shared.processes.kill_all();
    }
}

fn typed_resource<K: k8s_openapi::Resource>() -> &'static discovery::ResourceType {
    discovery::by_resource(K::GROUP, K::URL_PATH_SEGMENT)
        .unwrap_or_else(|| panic!("fake_kube: {} is not a kind the fake serves", K::KIND))
}

/// The controllers' loop: garbage collector and Job controller, run after every change and when a
/// deadline (grace period, activeDeadlineSeconds, TTL, back-off) is due.
async fn controllers(shared: Arc<Shared>) {
    let mut changes = shared.changes.subscribe();
    let mut tracks = HashMap::new();
    loop {
        changes.borrow_and_update();
        let now = Instant::now();
        let backoff = shared.sim.lock().expect("sim lock").delays.backoff;
        let next = shared.write(|s| {
            let a = gc::pass(s, now);
            let b = jobs::pass(s, &mut tracks, now, backoff);
            match (a, b) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            }
        });
        let wake = next
            .map_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600), tokio::time::Instant::from_std);
        tokio::select! {
            r = changes.changed() => if r.is_err() { return },
            _ = tokio::time::sleep_until(wake) => {}
        }
    }
}

impl FakeKube {
    /// Bind 127.0.0.1 on a free port and serve from a tokio task.
    pub async fn start(config: FakeConfig) -> FakeKube {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("fake_kube: bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("fake_kube: local address");
        let shared = Arc::new(Shared {
            store: Mutex::new(Store::new(
                config.history_limit,
                config.delays.pod_grace,
                config.delays.namespace_cleanup,
            )),
            changes: tokio_watch::channel(0).0,
            faults: Faults::default(),
            requests: Mutex::new(Vec::new()),
            sim: Mutex::new(Sim {
                delays: config.delays,
                rules: config.rules,
                default_logs: config.default_logs,
                programs: config.processes,
            }),
            cancel: CancellationToken::new(),
            addr,
            bookmark_interval: config.bookmark_interval,
            processes: processes::Registry::default(),
        });
        let fake = FakeKube { shared: shared.clone(), url: format!("http://{addr}") };
        fake.add_namespace("default");
        for ns in &config.namespaces {
            fake.add_namespace(ns);
        }
        let app = axum::Router::new().fallback(routes::dispatch).with_state(shared.clone());
        let cancel = shared.cancel.clone();
        let listener = listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).with_graceful_shutdown(cancel.cancelled_owned()).await;
        });
        shared.spawn(controllers(shared.clone()));
        fake
    }

    /// A built-in kind, or a custom kind one of this fake's CRDs defines, by a lenient name.
    fn resource_type(&self, resource: &str) -> &'static discovery::ResourceType {
        let custom = self.shared.store.lock().expect("store lock").custom.clone();
        discovery::by_name(&custom, resource).unwrap_or_else(|| panic!("fake_kube: unknown resource {resource:?}"))
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A kube client for this server with `namespace` as its default namespace.
    pub fn client(&self, namespace: &str) -> kube::Client {
        let mut config = kube::Config::new(self.url.parse().expect("fake_kube: url"));
        config.default_namespace = namespace.into();
        kube::Client::try_from(config).expect("fake_kube: kube client")
    }

    /// Write `dir/kubeconfig`: cluster `fake` at `url()`, a token user, context `fake` with
    /// `namespace`, current-context `fake`.
    pub fn write_kubeconfig(&self, dir: &Path, namespace: &str) -> PathBuf {
        let path = dir.join("kubeconfig");
        let yaml = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {}\nusers:\n- name: fake\n  \
             user:\n    token: fake-token\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\n    \
             namespace: {namespace}\ncurrent-context: fake\npreferences: {{}}\n",
            self.url
        );
        std::fs::write(&path, yaml).expect("fake_kube: write kubeconfig");
        path
    }

    /// Add a failure-script rule (checked after the earlier ones) for pods created from now on.
    pub fn add_rule(&self, substring: &str, script: Script) {
        self.shared.sim.lock().expect("sim lock").rules.push((substring.into(), script));
    }

    /// Change the kubelet's delays for pods created from now on (and the deletion delays).
    pub fn set_delays(&self, delays: Delays) {
        self.shared.sim.lock().expect("sim lock").delays = delays;
        let mut store = self.shared.store.lock().expect("store lock");
        store.pod_grace = delays.pod_grace;
        store.namespace_cleanup = delays.namespace_cleanup;
    }

    pub fn delays(&self) -> Delays {
        self.shared.sim.lock().expect("sim lock").delays
    }

    /// The fault-injection handle.
    pub fn faults(&self) -> Faults {
        self.shared.faults.clone()
    }

    /// Create a namespace if it does not exist.
    pub fn add_namespace(&self, ns: &str) {
        let rt = self.resource_type("namespaces");
        self.shared.write(|s| {
            if !s.namespace_exists(ns) {
                s.create(rt, "", json!({ "metadata": { "name": ns } }), false).expect("fake_kube: create namespace");
            }
        });
    }

    /// Every object of kind `K` in `ns` (all namespaces for cluster-scoped kinds), by name.
    pub fn objects<K: k8s_openapi::Resource + DeserializeOwned>(&self, ns: &str) -> Vec<K> {
        let rt = typed_resource::<K>();
        let ns = rt.namespaced.then_some(ns);
        self.shared
            .store
            .lock()
            .expect("store lock")
            .list(rt.id(), ns)
            .into_iter()
            .map(|(_, o)| serde_json::from_value(o.clone()).expect("fake_kube: stored object deserializes"))
            .collect()
    }

    /// One object of kind `K`.
    pub fn object<K: k8s_openapi::Resource + DeserializeOwned>(&self, ns: &str, name: &str) -> Option<K> {
        let rt = typed_resource::<K>();
        let v = self.shared.store.lock().expect("store lock").get(&Key::new(rt, ns, name)).cloned()?;
        Some(serde_json::from_value(v).expect("fake_kube: stored object deserializes"))
    }

    /// One stored object as JSON; `resource` is a kind or resource name (`"Job"`, `"jobs"`, `"pod"`).
    pub fn get_json(&self, resource: &str, ns: &str, name: &str) -> Option<Value> {
        let rt = self.resource_type(resource);
        self.shared.store.lock().expect("store lock").get(&Key::new(rt, ns, name)).cloned()
    }

    /// The stored objects of a kind, in one namespace or (None) all.
    pub fn list_json(&self, resource: &str, ns: Option<&str>) -> Vec<Value> {
        let rt = self.resource_type(resource);
        self.shared.store.lock().expect("store lock").list(rt.id(), ns).into_iter().map(|(_, o)| o.clone()).collect()
    }

    /// Store an object directly, bypassing the API: no defaulting, no validation, and no controller
    /// or kubelet acts on it (its status stays as given). Fills uid, resourceVersion,
    /// creationTimestamp; the namespace comes from the object (`default` if absent). Watches see an
    /// ADDED event. Panics if the name is taken. Mind that the garbage collector deletes objects
    /// whose ownerReferences all name uids that do not exist.
    pub fn insert<K: k8s_openapi::Resource + Serialize>(&self, obj: &K) -> Value {
        let rt = typed_resource::<K>();
        let v = serde_json::to_value(obj).expect("fake_kube: object serializes");
        let ns = v["metadata"]["namespace"].as_str().unwrap_or("default").to_string();
        self.insert_json(rt.plural, &ns, v)
    }

    /// `insert` for JSON; `resource` as in `get_json`.
    pub fn insert_json(&self, resource: &str, ns: &str, mut obj: Value) -> Value {
        let rt = self.resource_type(resource);
        if obj["metadata"]["name"].as_str().is_none_or(str::is_empty)
            && let Some(prefix) = obj["metadata"]["generateName"].as_str()
        {
            obj["metadata"]["name"] = json!(format!("{prefix}{}", store::random_suffix()));
        }
        let name = obj["metadata"]["name"].as_str().expect("fake_kube: insert needs metadata.name").to_string();
        self.shared.write(|s| {
            assert!(s.get(&Key::new(rt, ns, &name)).is_none(), "fake_kube: {} {ns}/{name} already exists", rt.plural);
            s.insert_new(rt, ns, obj, false)
        })
    }

    /// Change a stored object in place (a new resourceVersion, a MODIFIED event), bypassing the
    /// API; None if it does not exist.
    pub fn update_json(&self, resource: &str, ns: &str, name: &str, f: impl FnOnce(&mut Value)) -> Option<Value> {
        let rt = self.resource_type(resource);
        self.shared.write(|s| s.modify(&Key::new(rt, ns, name), f))
    }

    /// Append a line to a pod's current container log.
    pub fn append_log(&self, ns: &str, pod: &str, line: &str) {
        let rt = self.resource_type("pods");
        let mut s = self.shared.store.lock().expect("store lock");
        let Some(uid) = s.get(&Key::new(rt, ns, pod)).map(|p| store::uid_of(p).to_string()) else { return };
        s.logs.entry(uid).or_default().current.push(line.into());
    }

    /// Every request received so far, in order.
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.shared.requests.lock().expect("requests lock").clone()
    }

    pub fn clear_requests(&self) {
        self.shared.requests.lock().expect("requests lock").clear();
    }

    /// Every readiness probe the process kubelet ran, in order.
    pub fn probes(&self) -> Vec<ProbeRecord> {
        self.shared.processes.probes()
    }

    /// Every container process the process kubelet started, in order: pod, command, pid.
    pub fn started_processes(&self) -> Vec<StartedProcess> {
        self.shared.processes.started()
    }

    /// Break every open port-forward tunnel now, as a lost connection to the kubelet does.
    pub fn drop_tunnels(&self) {
        self.shared.processes.tunnel_drops.send_modify(|g| *g += 1);
    }

    /// How many port-forward connections to a pod were opened (one per forwarded port of each
    /// `pods/portforward` request that reached its pod).
    pub fn tunnels_opened(&self) -> usize {
        self.shared.processes.tunnels.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The current (latest) resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.shared.store.lock().expect("store lock").rv()
    }

    /// Forget the watch history (as etcd compaction does): a watch from any resourceVersion
    /// before now gets an ERROR event with 410 Gone.
    pub fn compact(&self) {
        self.shared.store.lock().expect("store lock").compact();
    }

    /// Wait until `f` holds, re-checking after every write and every 10 ms (for predicates on
    /// `requests()`); false on timeout.
    pub async fn wait_until(&self, timeout: Duration, mut f: impl FnMut(&FakeKube) -> bool) -> bool {
        let mut changes = self.shared.changes.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            changes.borrow_and_update();
            if f(self) {
                return true;
            }
            tokio::select! {
                r = changes.changed() => if r.is_err() { return f(self) },
                _ = tokio::time::sleep(Duration::from_millis(10)) => {}
                _ = tokio::time::sleep_until(deadline) => return f(self),
            }
        }
    }
}
