//! The scripted scheduler + kubelet of one node (`fake-node`): each managed pod walks Pending →
//! scheduled → ContainerCreating → Running → Ready after configurable delays, or follows the
//! failure script its image/command picks, with the core/v1 Events the real components emit.
//! Missing Secrets referenced by `envFrom`/`env`/volumes block the pod until they appear.
//! Also serves `pods/{name}/log` (for both kubelets) with the kubelet's answers for containers
//! that are not running. The process kubelet (`process_kubelet.rs`) is the other choice.

use std::{collections::HashMap, sync::Arc, time::Duration};

use axum::response::Response;
use rand::RngExt;
use serde_json::{Value, json};

use super::{
    Shared, discovery,
    status::ApiError,
    store::{Key, PodLogs, Store, now_rfc3339},
};

/// What a pod's containers do. Picked per pod by the first rule whose substring occurs in a
/// container image or in its command and args joined by spaces; `Ready` when none matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Script {
    /// Start and become Ready.
    Ready,
    /// Start, never become Ready (a failing readiness probe).
    NeverReady,
    /// `ErrImagePull`, then `ImagePullBackOff`; the pod stays Pending.
    ImagePullFailure,
    /// Run, print `logs`, exit with `exit_code` (reason `Error`). With restartPolicy Never the pod
    /// is Failed; with OnFailure/Always the container restarts in a CrashLoopBackOff loop.
    Crash { exit_code: i32, logs: Vec<String> },
    /// Restart forever in `CrashLoopBackOff` (what a restartPolicy Always container shows),
    /// whatever the restart policy.
    CrashLoop { exit_code: i32, logs: Vec<String> },
    /// `CreateContainerConfigError` (as for a missing ConfigMap key); stays so.
    ConfigError,
    /// The scheduler finds no node: PodScheduled False, reason `Unschedulable`.
    Unschedulable,
    /// Run, print `logs`, exit 0: the pod Succeeds and its Job completes.
    Complete { logs: Vec<String> },
}

/// How long each step takes. The defaults are small so that tests are fast.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delays {
    /// Creation → scheduled to the node.
    pub schedule: Duration,
    /// Scheduled → containers started (image pull, create, start).
    pub start: Duration,
    /// Started → Ready.
    pub ready: Duration,
    /// How long a crashing/completing container runs before it exits.
    pub run: Duration,
    /// The back-off between restarts and image pull retries.
    pub backoff: Duration,
    /// How long a gracefully deleted pod stays terminating (capped by its grace period).
    pub pod_grace: Duration,
    /// How long a deleted namespace stays Terminating (with its objects) before it is emptied.
    pub namespace_cleanup: Duration,
    /// Process kubelet only: how long after a readiness probe's verdict changes the pod shows it
    /// (the real kubelet's status sync lag). The scripted kubelet uses `ready` instead.
    pub probe_lag: Duration,
}

impl Default for Delays {
    fn default() -> Self {
        Delays {
            schedule: Duration::from_millis(30),
            start: Duration::from_millis(60),
            ready: Duration::from_millis(60),
            run: Duration::from_millis(60),
            backoff: Duration::from_millis(100),
            pod_grace: Duration::from_millis(50),
            namespace_cleanup: Duration::from_millis(300),
            probe_lag: Duration::ZERO,
        }
    }
}

pub(crate) const NODE: &str = "fake-node";
const HOST_IP: &str = "172.18.0.2";

pub(crate) fn pods_type() -> &'static discovery::ResourceType {
    discovery::by_resource("", "pods").expect("pods type")
}

/// The first rule whose substring occurs in an image or a command line of the pod.
pub(crate) fn pick_script(rules: &[(String, Script)], pod: &Value) -> Script {
    let containers = pod["spec"]["containers"].as_array().cloned().unwrap_or_default();
    let texts: Vec<String> = containers
        .iter()
        .flat_map(|c| {
            let words: Vec<&str> = ["command", "args"]
                .iter()
                .flat_map(|f| c[*f].as_array().into_iter().flatten().filter_map(Value::as_str))
                .collect();
            [c["image"].as_str().unwrap_or_default().to_string(), words.join(" ")]
        })
        .collect();
    rules
        .iter()
        .find(|(sub, _)| texts.iter().any(|t| t.contains(sub.as_str())))
        .map_or(Script::Ready, |(_, s)| s.clone())
}

pub(crate) fn hex(n: usize) -> String {
    let mut rng = rand::rng();
    (0..n).map(|_| format!("{:x}", rng.random_range(0..16u8))).collect()
}

/// Record a core/v1 Event about `involved` (a stored object), as `component` does.
pub(crate) fn emit_event(
    store: &mut Store,
    involved: &Value,
    type_: &str,
    reason: &str,
    message: &str,
    component: &str,
) {
    emit_event_at(store, involved, None, type_, reason, message, component);
}

pub(crate) fn emit_event_at(
    store: &mut Store,
    involved: &Value,
    field_path: Option<&str>,
    type_: &str,
    reason: &str,
    message: &str,
    component: &str,
) {
    let m = &involved["metadata"];
    let ns = m["namespace"].as_str().unwrap_or("default").to_string();
    let name = m["name"].as_str().unwrap_or_default();
    let mut obj_ref = json!({
        "kind": involved["kind"],
        "namespace": ns,
        "name": name,
        "uid": m["uid"],
        "apiVersion": involved["apiVersion"],
        "resourceVersion": m["resourceVersion"],
    });
    if let Some(fp) = field_path {
        obj_ref["fieldPath"] = json!(fp);
    }
    let now = now_rfc3339();
    let host = if component == "kubelet" { Some(NODE) } else { None };
    let mut source = json!({ "component": component });
    if let Some(h) = host {
        source["host"] = json!(h);
    }
    let ev = json!({
        "metadata": { "name": format!("{name}.{}", hex(16)), "namespace": ns },
        "involvedObject": obj_ref,
        "reason": reason,
        "message": message,
        "source": source,
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
        "type": type_,
        "eventTime": null,
        "reportingComponent": component,
        "reportingInstance": host.unwrap_or_default(),
    });
    let rt = discovery::by_resource("", "events").expect("events type");
    store.insert_new(rt, &ns, ev, false);
}

pub(crate) fn set_condition(pod: &mut Value, type_: &str, status: bool, reason: Option<&str>, message: Option<&str>) {
    let status_s = if status { "True" } else { "False" };
    if !pod["status"]["conditions"].is_array() {
        pod["status"]["conditions"] = json!([]);
    }
    let conds = pod["status"]["conditions"].as_array_mut().expect("array");
    let mut c =
        json!({ "type": type_, "status": status_s, "lastProbeTime": null, "lastTransitionTime": now_rfc3339() });
    if let Some(r) = reason {
        c["reason"] = json!(r);
    }
    if let Some(m) = message {
        c["message"] = json!(m);
    }
    match conds.iter_mut().find(|x| x["type"] == type_) {
        Some(existing) => {
            if existing["status"] == status_s {
                c["lastTransitionTime"] = existing["lastTransitionTime"].clone();
            }
            *existing = c;
        }
        None => conds.push(c),
    }
}

/// One managed pod as the kubelet sees it.
struct PodSim {
    shared: Arc<Shared>,
    key: Key,
    uid: String,
    containers: Vec<(String, String)>,
    restart_policy: String,
    container_ids: HashMap<String, String>,
    restarts: i64,
}

/// The container state a step sets for every container.
enum CState {
    Waiting(&'static str, String),
    Running { started_at: String },
    Terminated { exit_code: i32, started_at: String },
}

impl PodSim {
    /// Change the pod; false when it is gone (or replaced) or terminating: the kubelet stops.
    fn update(&self, f: impl FnOnce(&mut Value, &mut Store)) -> bool {
        self.shared.write(|s| {
            let Some(pod) = s.get(&self.key) else { return false };
            if pod["metadata"]["uid"] != self.uid.as_str() || pod["metadata"].get("deletionTimestamp").is_some() {
                return false;
            }
            let mut pod = pod.clone();
            f(&mut pod, s);
            s.modify(&self.key, |p| *p = pod);
            true
        })
    }

    fn alive(&self) -> bool {
        self.update(|_, _| {})
    }

    fn event(&self, type_: &str, reason: &str, message: &str) -> bool {
        self.event_from(type_, reason, message, "kubelet", true)
    }

    fn event_from(&self, type_: &str, reason: &str, message: &str, component: &str, container: bool) -> bool {
        let container_path = self.containers.first().map(|(n, _)| format!("spec.containers{{{n}}}"));
        self.shared.write(|s| {
            let Some(pod) = s.get(&self.key).filter(|p| p["metadata"]["uid"] == self.uid.as_str()).cloned() else {
                return false;
            };
            let fp = if container { container_path.as_deref() } else { None };
            emit_event_at(s, &pod, fp, type_, reason, message, component);
            true
        })
    }

    fn statuses(&mut self, state: &CState, ready: bool, last: Option<Value>) -> Value {
        let mut out = Vec::new();
        for (name, image) in &self.containers {
            let (state_json, started) = match state {
                CState::Waiting(reason, message) => {
                    let mut w = json!({ "reason": reason });
                    if !message.is_empty() {
                        w["message"] = json!(message);
                    }
                    (json!({ "waiting": w }), false)
                }
                CState::Running { started_at } => (json!({ "running": { "startedAt": started_at } }), true),
                CState::Terminated { exit_code, started_at } => {
                    let reason = if *exit_code == 0 { "Completed" } else { "Error" };
                    let t = json!({
                        "exitCode": exit_code,
                        "reason": reason,
                        "startedAt": started_at,
                        "finishedAt": now_rfc3339(),
                        "containerID": self.container_ids.get(name).cloned().unwrap_or_default(),
                    });
                    (json!({ "terminated": t }), false)
                }
            };
            let mut s = json!({
                "name": name,
                "image": image,
                "imageID": "",
                "ready": ready,
                "started": started,
                "restartCount": self.restarts,
                "state": state_json,
                "lastState": last.clone().unwrap_or_else(|| json!({})),
            });
            if let Some(id) = self.container_ids.get(name)
                && !matches!(state, CState::Waiting(..))
            {
                s["containerID"] = json!(id);
                s["imageID"] = json!(format!("{}@sha256:{}", image.split(':').next().unwrap_or(image), "0".repeat(64)));
            }
            out.push(s);
        }
        json!(out)
    }

    fn new_container_ids(&mut self) {
        for (name, _) in &self.containers {
            self.container_ids.insert(name.clone(), format!("containerd://{}", hex(64)));
        }
    }

    fn set_waiting(&mut self, reason: &'static str, message: String) -> bool {
        let cs = self.statuses(&CState::Waiting(reason, message), false, None);
        let names = self.container_names();
        self.update(move |pod, _| {
            pod["status"]["containerStatuses"] = cs;
            set_condition(
                pod,
                "Ready",
                false,
                Some("ContainersNotReady"),
                Some(&format!("containers with unready status: [{names}]")),
            );
            set_condition(
                pod,
                "ContainersReady",
                false,
                Some("ContainersNotReady"),
                Some(&format!("containers with unready status: [{names}]")),
            );
        })
    }

    fn container_names(&self) -> String {
        self.containers.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>().join(" ")
    }

    fn image(&self) -> String {
        self.containers.first().map(|(_, i)| i.clone()).unwrap_or_default()
    }

    fn container(&self) -> String {
        self.containers.first().map(|(n, _)| n.clone()).unwrap_or_default()
    }
}

/// A Secret the pod needs that does not exist: (blocks container creation (env) or the volume mount).
pub(crate) fn missing_secret(store: &Store, ns: &str, pod: &Value) -> Option<(bool, String, String)> {
    let secrets = discovery::by_resource("", "secrets").expect("secrets type");
    let exists = |name: &str| store.get(&Key::new(secrets, ns, name)).cloned();
    for v in pod["spec"]["volumes"].as_array().into_iter().flatten() {
        let s = &v["secret"];
        if let Some(name) = s["secretName"].as_str()
            && s["optional"].as_bool() != Some(true)
            && exists(name).is_none()
        {
            let vol = v["name"].as_str().unwrap_or_default();
            return Some((
                false,
                format!("MountVolume.SetUp failed for volume \"{vol}\" : secret \"{name}\" not found"),
                String::new(),
            ));
        }
    }
    for c in pod["spec"]["containers"].as_array().into_iter().flatten() {
        for ef in c["envFrom"].as_array().into_iter().flatten() {
            let r = &ef["secretRef"];
            if let Some(name) = r["name"].as_str()
                && r["optional"].as_bool() != Some(true)
                && exists(name).is_none()
            {
                return Some((true, format!("secret \"{name}\" not found"), String::new()));
            }
        }
        for e in c["env"].as_array().into_iter().flatten() {
            let r = &e["valueFrom"]["secretKeyRef"];
            let (Some(name), Some(key)) = (r["name"].as_str(), r["key"].as_str()) else { continue };
            if r["optional"].as_bool() == Some(true) {
                continue;
            }
            match exists(name) {
                None => return Some((true, format!("secret \"{name}\" not found"), String::new())),
                Some(s) if s["data"].get(key).is_none() => {
                    return Some((true, format!("couldn't find key {key} in Secret {ns}/{name}"), String::new()));
                }
                Some(_) => {}
            }
        }
    }
    None
}

/// Run the kubelet for one managed pod until it settles, is deleted, or the fake stops.
pub(crate) async fn run_pod(shared: Arc<Shared>, ns: String, name: String, uid: String) {
    let key = Key::new(pods_type(), &ns, &name);
    let Some(pod) = shared.store.lock().expect("store lock").get(&key).cloned() else { return };
    let (script, delays, default_logs) = {
        let sim = shared.sim.lock().expect("sim lock");
        (pick_script(&sim.rules, &pod), sim.delays, sim.default_logs.clone())
    };
    let containers: Vec<(String, String)> = pod["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            (c["name"].as_str().unwrap_or_default().to_string(), c["image"].as_str().unwrap_or_default().to_string())
        })
        .collect();
    let mut p = PodSim {
        shared: shared.clone(),
        key,
        uid,
        containers,
        restart_policy: pod["spec"]["restartPolicy"].as_str().unwrap_or("Always").to_string(),
        container_ids: HashMap::new(),
        restarts: 0,
    };
    let sleep = tokio::time::sleep;

    // Scheduler.
    sleep(delays.schedule).await;
    if script == Script::Unschedulable {
        let msg = "0/1 nodes are available: 1 Insufficient memory. preemption: 0/1 nodes are available: 1 No preemption victims found for incoming pod.";
        p.update(|pod, _| set_condition(pod, "PodScheduled", false, Some("Unschedulable"), Some(msg)));
        p.event_from("Warning", "FailedScheduling", msg, "default-scheduler", false);
        return;
    }
    if !p.update(|pod, _| {
        pod["spec"]["nodeName"] = json!(NODE);
        set_condition(pod, "PodScheduled", true, None, None);
    }) {
        return;
    }
    p.event_from(
        "Normal",
        "Scheduled",
        &format!("Successfully assigned {ns}/{name} to {NODE}"),
        "default-scheduler",
        false,
    );

    // Kubelet admits the pod.
    let names = p.container_names();
    let creating = p.statuses(&CState::Waiting("ContainerCreating", String::new()), false, None);
    if !p.update(|pod, _| {
        let st = &mut pod["status"];
        st["hostIP"] = json!(HOST_IP);
        st["hostIPs"] = json!([{ "ip": HOST_IP }]);
        st["startTime"] = json!(now_rfc3339());
        set_condition(pod, "PodReadyToStartContainers", false, None, None);
        set_condition(pod, "Initialized", true, None, None);
        set_condition(
            pod,
            "Ready",
            false,
            Some("ContainersNotReady"),
            Some(&format!("containers with unready status: [{names}]")),
        );
        set_condition(
            pod,
            "ContainersReady",
            false,
            Some("ContainersNotReady"),
            Some(&format!("containers with unready status: [{names}]")),
        );
        pod["status"]["containerStatuses"] = creating;
    }) {
        return;
    }

    // Secrets it needs: wait for them, as the kubelet retries.
    let mut changes = shared.changes.subscribe();
    let mut reported: Option<String> = None;
    loop {
        changes.borrow_and_update();
        let missing = {
            let store = shared.store.lock().expect("store lock");
            let Some(pod) = store.get(&p.key).cloned() else { return };
            missing_secret(&store, &ns, &pod)
        };
        let Some((blocks_container, message, _)) = missing else { break };
        if reported.as_deref() != Some(message.as_str()) {
            if blocks_container {
                if !p.set_waiting("CreateContainerConfigError", message.clone()) {
                    return;
                }
                p.event("Warning", "Failed", &format!("Error: {message}"));
            } else {
                p.event_from("Warning", "FailedMount", &message, "kubelet", false);
            }
            reported = Some(message);
        }
        tokio::select! {
            r = changes.changed() => if r.is_err() { return },
            _ = sleep(Duration::from_millis(500)) => if !p.alive() { return },
        }
    }
    if reported.is_some() && !p.set_waiting("ContainerCreating", String::new()) {
        return;
    }

    if script == Script::ConfigError {
        let msg = "configmap \"fake-config\" not found".to_string();
        p.set_waiting("CreateContainerConfigError", msg.clone());
        p.event("Warning", "Failed", &format!("Error: {msg}"));
        return;
    }

    let image = p.image();
    p.event("Normal", "Pulling", &format!("Pulling image \"{image}\""));
    sleep(delays.start).await;

    if script == Script::ImagePullFailure {
        let reference = if image.contains('/') { image.clone() } else { format!("docker.io/library/{image}") };
        let reference = if reference.rsplit('/').next().is_some_and(|l| l.contains(':')) {
            reference
        } else {
            format!("{reference}:latest")
        };
        let err = format!(
            "rpc error: code = NotFound desc = failed to pull and unpack image \"{reference}\": failed to resolve reference \"{reference}\": {reference}: not found"
        );
        if !p.set_waiting("ErrImagePull", err.clone()) {
            return;
        }
        p.event("Warning", "Failed", &format!("Failed to pull image \"{image}\": {err}"));
        p.event("Warning", "Failed", "Error: ErrImagePull");
        sleep(delays.backoff).await;
        if !p.set_waiting("ImagePullBackOff", format!("Back-off pulling image \"{image}\": ErrImagePull: {err}")) {
            return;
        }
        p.event("Normal", "BackOff", &format!("Back-off pulling image \"{image}\""));
        p.event("Warning", "Failed", "Error: ImagePullBackOff");
        return;
    }

    let script_logs = match &script {
        Script::Crash { logs, .. } | Script::CrashLoop { logs, .. } | Script::Complete { logs } => logs.clone(),
        _ => Vec::new(),
    };
    let mut lines = default_logs.clone();
    lines.extend(script_logs.iter().cloned());
    let container = p.container();
    p.event(
        "Normal",
        "Pulled",
        &format!(
            "Successfully pulled image \"{image}\" in 1.02s (1.02s including waiting). Image size: 12345678 bytes."
        ),
    );
    if !start_containers(&mut p, &lines, None).await {
        return;
    }

    match script {
        Script::Ready => {
            sleep(delays.ready).await;
            let cs = p.statuses(&CState::Running { started_at: now_rfc3339() }, true, None);
            p.update(|pod, _| {
                keep_started_at(pod, cs);
                set_condition(pod, "ContainersReady", true, None, None);
                set_condition(pod, "Ready", true, None, None);
            });
        }
        Script::NeverReady => {
            sleep(delays.ready).await;
            p.event("Warning", "Unhealthy", "Readiness probe failed: HTTP probe failed with statuscode: 503");
        }
        Script::Complete { .. } | Script::Crash { .. } | Script::CrashLoop { .. } => {
            let exit_code = match &script {
                Script::Crash { exit_code, .. } | Script::CrashLoop { exit_code, .. } => *exit_code,
                _ => 0,
            };
            let restarts = match &script {
                Script::CrashLoop { .. } => true,
                _ => match p.restart_policy.as_str() {
                    "Never" => false,
                    "OnFailure" => exit_code != 0,
                    _ => true,
                },
            };
            let mut started_at = now_rfc3339();
            loop {
                sleep(delays.run).await;
                if !restarts {
                    let cs = p.statuses(&CState::Terminated { exit_code, started_at: started_at.clone() }, false, None);
                    let phase = if exit_code == 0 { "Succeeded" } else { "Failed" };
                    let reason = if exit_code == 0 { "PodCompleted" } else { "PodFailed" };
                    p.update(|pod, _| {
                        pod["status"]["containerStatuses"] = cs;
                        pod["status"]["phase"] = json!(phase);
                        set_condition(pod, "PodReadyToStartContainers", false, None, None);
                        set_condition(pod, "Ready", false, Some(reason), None);
                        set_condition(pod, "ContainersReady", false, Some(reason), None);
                    });
                    return;
                }
                // The container exited: back-off, then start again.
                let last = p.statuses(&CState::Terminated { exit_code, started_at: started_at.clone() }, false, None);
                let last_state = last[0]["state"].clone();
                p.restarts += 1;
                let msg = format!("back-off 10s restarting failed container={container} pod={name}_{ns}({})", p.uid);
                let cs = p.statuses(&CState::Waiting("CrashLoopBackOff", msg), false, Some(last_state));
                shared.write(|s| {
                    let logs = s.logs.entry(p.uid.clone()).or_default();
                    logs.previous = Some(std::mem::take(&mut logs.current));
                });
                let names = p.container_names();
                if !p.update(|pod, _| {
                    pod["status"]["containerStatuses"] = cs;
                    set_condition(
                        pod,
                        "Ready",
                        false,
                        Some("ContainersNotReady"),
                        Some(&format!("containers with unready status: [{names}]")),
                    );
                    set_condition(
                        pod,
                        "ContainersReady",
                        false,
                        Some("ContainersNotReady"),
                        Some(&format!("containers with unready status: [{names}]")),
                    );
                }) {
                    return;
                }
                p.event(
                    "Warning",
                    "BackOff",
                    &format!("Back-off restarting failed container {container} in pod {name}_{ns}({})", p.uid),
                );
                sleep(delays.backoff).await;
                p.event("Normal", "Pulled", &format!("Container image \"{image}\" already present on machine"));
                let last = Some(last[0]["state"].clone());
                if !start_containers(&mut p, &lines, last).await {
                    return;
                }
                started_at = now_rfc3339();
            }
        }
        Script::ImagePullFailure | Script::ConfigError | Script::Unschedulable => {}
    }
}

/// Ready changes the `ready` flags but not when the containers started.
fn keep_started_at(pod: &mut Value, mut cs: Value) {
    if let (Some(new), Some(old)) = (cs.as_array_mut(), pod["status"]["containerStatuses"].as_array()) {
        for (n, o) in new.iter_mut().zip(old) {
            n["state"] = o["state"].clone();
            n["lastState"] = o["lastState"].clone();
        }
    }
    pod["status"]["containerStatuses"] = cs;
}

async fn start_containers(p: &mut PodSim, lines: &[String], last: Option<Value>) -> bool {
    p.new_container_ids();
    let container = p.container();
    p.event("Normal", "Created", &format!("Created container: {container}"));
    p.event("Normal", "Started", &format!("Started container {container}"));
    let cs = p.statuses(&CState::Running { started_at: now_rfc3339() }, false, last);
    let lines = lines.to_vec();
    let uid = p.uid.clone();
    p.update(move |pod, s| {
        if pod["status"]["podIP"].is_null() {
            let ip = s.pod_ip();
            pod["status"]["podIP"] = json!(ip);
            pod["status"]["podIPs"] = json!([{ "ip": ip }]);
        }
        pod["status"]["phase"] = json!("Running");
        pod["status"]["containerStatuses"] = cs;
        set_condition(pod, "PodReadyToStartContainers", true, None, None);
        s.logs.entry(uid).or_insert_with(PodLogs::default).current = lines;
    })
}

/// `GET pods/{name}/log`: the kubelet's log endpoint (plain text), or its 400 for containers that
/// have not started.
pub(crate) fn logs(shared: &Arc<Shared>, ns: &str, name: &str, query: &HashMap<String, String>) -> Response {
    let store = shared.store.lock().expect("store lock");
    let Some(pod) = store.get(&Key::new(pods_type(), ns, name)) else {
        return ApiError::not_found(pods_type(), name).response();
    };
    let containers: Vec<&str> =
        pod["spec"]["containers"].as_array().into_iter().flatten().filter_map(|c| c["name"].as_str()).collect();
    let container = match query.get("container") {
        Some(c) if !c.is_empty() => c.clone(),
        _ if containers.len() == 1 => containers[0].to_string(),
        _ => {
            return ApiError::bad_request(format!(
                "a container name must be specified for pod {name}, choose one of: [{}]",
                containers.join(" ")
            ))
            .response();
        }
    };
    let init: Vec<&str> =
        pod["spec"]["initContainers"].as_array().into_iter().flatten().filter_map(|c| c["name"].as_str()).collect();
    if !containers.contains(&container.as_str()) && !init.contains(&container.as_str()) {
        return ApiError::bad_request(format!("container {container} is not valid for pod {name}")).response();
    }
    if pod["spec"]["nodeName"].as_str().is_none_or(str::is_empty) {
        return ApiError::bad_request(format!("pod {name} does not have a host assigned")).response();
    }
    let status = ["containerStatuses", "initContainerStatuses"]
        .iter()
        .filter_map(|field| pod["status"][*field].as_array())
        .flatten()
        .find(|c| c["name"] == container.as_str())
        .cloned()
        .unwrap_or(Value::Null);
    let previous = query.get("previous").is_some_and(|p| p == "true");
    let state = &status["state"];
    let has_last = status["lastState"].get("terminated").is_some();
    let logs = store.logs.get(pod["metadata"]["uid"].as_str().unwrap_or_default()).cloned().unwrap_or_default();
    let lines: Vec<String> = if previous {
        match (has_last, logs.previous) {
            (true, Some(prev)) => prev,
            _ => {
                return ApiError::bad_request(format!(
                    "previous terminated container \"{container}\" in pod \"{name}\" not found"
                ))
                .response();
            }
        }
    } else if state.get("running").is_some() || state.get("terminated").is_some() {
        logs.by_container.get(&container).cloned().unwrap_or(logs.current)
    } else if has_last {
        logs.previous.unwrap_or_default()
    } else if let Some(w) = state.get("waiting") {
        let reason = w["reason"].as_str().unwrap_or_default();
        let why = match reason {
            "ErrImagePull" => "image can't be pulled".to_string(),
            "ImagePullBackOff" => "trying and failing to pull image".to_string(),
            r => r.to_string(),
        };
        return ApiError::bad_request(format!(
            "container \"{container}\" in pod \"{name}\" is waiting to start: {why}"
        ))
        .response();
    } else {
        return ApiError::bad_request(format!(
            "container \"{container}\" in pod \"{name}\" is waiting to start - no logs yet"
        ))
        .response();
    };
    let tail = query.get("tailLines").and_then(|t| t.parse::<usize>().ok());
    let start = tail.map_or(0, |t| lines.len().saturating_sub(t));
    let timestamps = query.get("timestamps").is_some_and(|t| t == "true");
    let mut text = String::new();
    for l in &lines[start..] {
        if timestamps {
            text.push_str(&now_rfc3339());
            text.push(' ');
        }
        text.push_str(l);
        text.push('\n');
    }
    if let Some(limit) = query.get("limitBytes").and_then(|l| l.parse::<usize>().ok())
        && text.len() > limit
    {
        let mut cut = limit;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
    }
    super::routes::plain(text)
}
