//! The process kubelet: a managed pod's containers run as real local processes (see `programs`
//! for how a container becomes a command). Init containers run first, in order, each to
//! completion; then the main containers, whose readiness probes run for real (`probe`). Exit
//! codes, reasons and pod phases are reported as the kubelet does for `restartPolicy: Never`
//! (no container is ever restarted, whatever the policy). Deleting the pod (or what owns it:
//! its Job, a suspend, `activeDeadlineSeconds`) sends SIGTERM to the process groups, SIGKILL
//! after the grace period, and the pod object stays until they are gone.
//!
//! Each pod gets a loopback pod IP (`127.0.0.N`, N ≥ 2) and its container ports are mapped to
//! free local ports; probes and port-forward go to `podIP:mappedPort`.

use std::{path::PathBuf, sync::Arc, time::Duration};

use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};

use super::{
    Shared,
    kubelet::{NODE, emit_event_at, hex, missing_secret, pods_type, set_condition},
    probe::{self, ProbeTarget},
    processes::{PodNet, Process},
    programs::{self, Programs, Volumes},
    store::{Key, now_rfc3339},
};

const HOST_IP: &str = "127.0.0.1";

/// One container as the kubelet reports it.
struct Container {
    spec: Value,
    name: String,
    image: String,
    id: Option<String>,
    state: Value,
    ready: bool,
    started: bool,
}

impl Container {
    fn new(spec: &Value, waiting: &str) -> Container {
        Container {
            name: spec["name"].as_str().unwrap_or_default().to_string(),
            image: spec["image"].as_str().unwrap_or_default().to_string(),
            spec: spec.clone(),
            id: None,
            state: json!({ "waiting": { "reason": waiting } }),
            ready: false,
            started: false,
        }
    }

    fn status(&self) -> Value {
        let mut s = json!({
            "name": self.name,
            "image": self.image,
            "imageID": "",
            "ready": self.ready,
            "started": self.started,
            "restartCount": 0,
            "state": self.state,
            "lastState": {},
        });
        if let Some(id) = &self.id {
            s["containerID"] = json!(id);
            let repo = self.image.split(':').next().unwrap_or(&self.image);
            s["imageID"] = json!(format!("{repo}@sha256:{}", "0".repeat(64)));
        }
        s
    }

    fn run(&mut self) {
        self.id = Some(format!("containerd://{}", hex(64)));
        self.state = json!({ "running": { "startedAt": now_rfc3339() } });
        self.started = true;
    }

    fn terminate(&mut self, exit_code: i32, reason: Option<&str>, message: Option<String>) {
        let started_at = self.state["running"]["startedAt"].as_str().map_or_else(now_rfc3339, String::from);
        let reason = reason.unwrap_or(if exit_code == 0 { "Completed" } else { "Error" });
        let mut t = json!({
            "exitCode": exit_code,
            "reason": reason,
            "startedAt": started_at,
            "finishedAt": now_rfc3339(),
            "containerID": self.id.clone().unwrap_or_default(),
        });
        if let Some(m) = message {
            t["message"] = json!(m);
        }
        self.state = json!({ "terminated": t });
        self.ready = false;
        self.started = false;
    }

    fn running(&self) -> bool {
        self.state.get("running").is_some()
    }
}

struct Kubelet {
    shared: Arc<Shared>,
    key: Key,
    uid: String,
    inits: Vec<Container>,
    mains: Vec<Container>,
    changes: watch::Receiver<u64>,
}

/// What happened to the pod object while the kubelet waited.
enum Gone {
    /// Marked for deletion with this grace period.
    Deleting(u64),
    /// Removed from the store (force delete).
    Removed,
}

impl Kubelet {
    /// Change the pod (also while it terminates); false when it is gone or replaced.
    fn update(&self, f: impl FnOnce(&mut Value)) -> bool {
        let init: Vec<Value> = self.inits.iter().map(Container::status).collect();
        let main: Vec<Value> = self.mains.iter().map(Container::status).collect();
        self.shared.write(|s| {
            let Some(pod) = s.get(&self.key) else { return false };
            if pod["metadata"]["uid"] != self.uid.as_str() {
                return false;
            }
            s.modify(&self.key, |pod| {
                if !init.is_empty() {
                    pod["status"]["initContainerStatuses"] = json!(init);
                }
                pod["status"]["containerStatuses"] = json!(main);
                f(pod);
            });
            true
        })
    }

    fn event(&self, field_path: Option<String>, type_: &str, reason: &str, message: &str) {
        self.shared.write(|s| {
            if let Some(pod) = s.get(&self.key).filter(|p| p["metadata"]["uid"] == self.uid.as_str()).cloned() {
                emit_event_at(s, &pod, field_path.as_deref(), type_, reason, message, "kubelet");
            }
        });
    }

    fn pod(&self) -> Option<Value> {
        let store = self.shared.store.lock().expect("store lock");
        store.get(&self.key).filter(|p| p["metadata"]["uid"] == self.uid.as_str()).cloned()
    }

    fn gone(&self) -> Option<Gone> {
        match self.pod() {
            None => Some(Gone::Removed),
            Some(p) if p["metadata"].get("deletionTimestamp").is_some() => {
                Some(Gone::Deleting(p["metadata"]["deletionGracePeriodSeconds"].as_u64().unwrap_or(30)))
            }
            Some(_) => None,
        }
    }

    /// Wait for `fut`, or until the pod is being deleted.
    async fn unless_deleted<T>(&mut self, fut: impl Future<Output = T>) -> Result<T, Gone> {
        tokio::pin!(fut);
        loop {
            self.changes.borrow_and_update();
            if let Some(g) = self.gone() {
                return Err(g);
            }
            tokio::select! {
                v = &mut fut => return Ok(v),
                r = self.changes.changed() => if r.is_err() { return Err(Gone::Removed) },
            }
        }
    }

    fn names(containers: &[Container]) -> String {
        containers.iter().map(|c| c.name.as_str()).collect::<Vec<_>>().join(" ")
    }

    /// Ready and ContainersReady from the main containers' `ready` flags.
    fn set_ready(&self) -> bool {
        let not_ready: Vec<&str> = self.mains.iter().filter(|c| !c.ready).map(|c| c.name.as_str()).collect();
        let message = format!("containers with unready status: [{}]", not_ready.join(" "));
        self.update(|pod| {
            for t in ["ContainersReady", "Ready"] {
                if not_ready.is_empty() {
                    set_condition(pod, t, true, None, None);
                } else {
                    set_condition(pod, t, false, Some("ContainersNotReady"), Some(&message));
                }
            }
        })
    }

    /// The pod is done (restartPolicy Never): its phase, and no more readiness.
    fn finish(&self, failed: bool) {
        let (phase, reason) = if failed { ("Failed", "PodFailed") } else { ("Succeeded", "PodCompleted") };
        self.update(|pod| {
            pod["status"]["phase"] = json!(phase);
            set_condition(pod, "PodReadyToStartContainers", false, None, None);
            set_condition(pod, "ContainersReady", false, Some(reason), None);
            set_condition(pod, "Ready", false, Some(reason), None);
        });
    }

    /// Start one container; on failure it is terminated with `StartError` (exit code 128) as
    /// containerd reports an exec that fails.
    fn start(
        &mut self,
        init: bool,
        i: usize,
        programs: &Programs,
        volumes: &Volumes,
        net: &PodNet,
        pod_name: &str,
    ) -> Option<Process> {
        let (ns, pod) = (self.key.ns.clone(), self.pod()?);
        let (spec, name, image) = {
            let c = if init { &self.inits[i] } else { &self.mains[i] };
            (c.spec.clone(), c.name.clone(), c.image.clone())
        };
        let launch = {
            let store = self.shared.store.lock().expect("store lock");
            programs::launch(programs, &store, &ns, &pod, &spec, volumes, &net.ports)
        };
        let field = format!("spec.{}{{{name}}}", if init { "initContainers" } else { "containers" });
        let spawned = Process::spawn(&self.shared, pod_name, &self.uid, &launch);
        let c = if init { &mut self.inits[i] } else { &mut self.mains[i] };
        c.run();
        match spawned {
            Ok(p) => {
                let pulled = format!("Container image \"{image}\" already present on machine");
                self.event(Some(field.clone()), "Normal", "Pulled", &pulled);
                self.event(Some(field.clone()), "Normal", "Created", &format!("Created container: {name}"));
                self.event(Some(field), "Normal", "Started", &format!("Started container {name}"));
                Some(p)
            }
            Err(e) => {
                let message = format!(
                    "failed to create containerd task: failed to create shim task: OCI runtime create failed: runc create failed: unable to start container process: exec: \"{}\": {e}",
                    launch.program
                );
                c.terminate(128, Some("StartError"), Some(message.clone()));
                self.event(Some(field), "Warning", "Failed", &format!("Error: {message}"));
                None
            }
        }
    }

    /// Stop `procs` as the kubelet does for a deleted pod: SIGTERM, SIGKILL after the grace period.
    async fn kill(&mut self, procs: &[(usize, Process)], init: bool, gone: Gone) {
        let grace = match gone {
            Gone::Deleting(g) => Duration::from_secs(g),
            Gone::Removed => Duration::ZERO,
        };
        for (i, p) in procs {
            let c = if init { &self.inits[*i] } else { &self.mains[*i] };
            let field = format!("spec.{}{{{}}}", if init { "initContainers" } else { "containers" }, c.name);
            self.event(Some(field), "Normal", "Killing", &format!("Stopping container {}", c.name));
            p.signal(if grace.is_zero() { libc::SIGKILL } else { libc::SIGTERM });
        }
        let all = futures::future::join_all(procs.iter().map(|(_, p)| p.wait()));
        let codes = match tokio::time::timeout(grace, all).await {
            Ok(codes) => codes,
            Err(_) => {
                for (_, p) in procs {
                    p.signal(libc::SIGKILL);
                }
                let all = futures::future::join_all(procs.iter().map(|(_, p)| p.wait()));
                tokio::time::timeout(Duration::from_secs(5), all).await.unwrap_or_default()
            }
        };
        for ((i, _), code) in procs.iter().zip(codes) {
            let c = if init { &mut self.inits[*i] } else { &mut self.mains[*i] };
            c.terminate(code, None, None);
        }
        self.shared.processes.set_running(&self.uid, false);
        self.update(|pod| {
            set_condition(pod, "ContainersReady", false, Some("ContainersNotReady"), None);
            set_condition(pod, "Ready", false, Some("ContainersNotReady"), None);
        });
    }

    /// Wait while a Secret the pod needs is missing, as the kubelet retries; false when the pod
    /// went away meanwhile.
    async fn wait_for_secrets(&mut self) -> bool {
        let mut reported: Option<String> = None;
        loop {
            self.changes.borrow_and_update();
            let missing = {
                let store = self.shared.store.lock().expect("store lock");
                let Some(pod) = store.get(&self.key).cloned() else { return false };
                missing_secret(&store, &self.key.ns, &pod)
            };
            let Some((blocks_container, message, _)) = missing else { break };
            if reported.as_deref() != Some(message.as_str()) {
                if blocks_container {
                    for c in &mut self.mains {
                        c.state = json!({ "waiting": { "reason": "CreateContainerConfigError", "message": message } });
                    }
                    self.update(|_| {});
                    self.event(None, "Warning", "Failed", &format!("Error: {message}"));
                } else {
                    self.event(None, "Warning", "FailedMount", &message);
                }
                reported = Some(message);
            }
            tokio::select! {
                r = self.changes.changed() => if r.is_err() { return false },
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
            if self.gone().is_some() {
                return false;
            }
        }
        if reported.is_some() {
            for c in &mut self.mains {
                c.state = json!({ "waiting": { "reason": "ContainerCreating" } });
            }
            self.update(|_| {});
        }
        true
    }
}

/// Lets go of a pod when its kubelet ends: the pod's directory, its network entry, and the
/// garbage collector's hold on it.
struct Release {
    shared: Arc<Shared>,
    uid: String,
    root: PathBuf,
}

impl Drop for Release {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
        self.shared.processes.remove_pod(&self.uid);
        self.shared.store.lock().expect("store lock").held.remove(&self.uid);
        // Wake the garbage collector even though no object changed.
        self.shared.changes.send_modify(|_| {});
    }
}

/// Aborts the probe tasks when the kubelet of their pod ends.
struct AbortOnDrop(Vec<tokio::task::JoinHandle<()>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for h in &self.0 {
            h.abort();
        }
    }
}

/// Run the process kubelet for one managed pod until its containers ended and it settled, or
/// it was deleted and its processes are gone, or the fake stops (which kills them).
pub(crate) async fn run_pod(shared: Arc<Shared>, ns: String, name: String, uid: String, programs: Programs) {
    let key = Key::new(pods_type(), &ns, &name);
    let Some(pod) = shared.store.lock().expect("store lock").get(&key).cloned() else { return };
    let delays = shared.sim.lock().expect("sim lock").delays;
    let root = std::env::temp_dir().join(format!("fake-kubelet-{}-{uid}", std::process::id()));
    shared.store.lock().expect("store lock").held.insert(uid.clone());
    let _release = Release { shared: shared.clone(), uid: uid.clone(), root: root.clone() };
    let list = |field: &str| pod["spec"][field].as_array().cloned().unwrap_or_default();
    let (init_specs, main_specs) = (list("initContainers"), list("containers"));
    let main_waiting = if init_specs.is_empty() { "ContainerCreating" } else { "PodInitializing" };
    let mut k = Kubelet {
        shared: shared.clone(),
        key,
        uid: uid.clone(),
        inits: init_specs.iter().map(|c| Container::new(c, "PodInitializing")).collect(),
        mains: main_specs.iter().map(|c| Container::new(c, main_waiting)).collect(),
        changes: shared.changes.subscribe(),
    };

    // Scheduler.
    tokio::time::sleep(delays.schedule).await;
    if !k.update(|pod| {
        pod["spec"]["nodeName"] = json!(NODE);
        set_condition(pod, "PodScheduled", true, None, None);
    }) || k.gone().is_some()
    {
        return;
    }
    k.shared.write(|s| {
        if let Some(pod) = s.get(&k.key).cloned() {
            let msg = format!("Successfully assigned {ns}/{name} to {NODE}");
            emit_event_at(s, &pod, None, "Normal", "Scheduled", &msg, "default-scheduler");
        }
    });

    // Admission: the sandbox gets its IP, the ports their local ports.
    let net = PodNet { ip: shared.processes.allocate_ip(), ports: programs::map_ports(&pod), running: false };
    shared.processes.add_pod(&uid, net.clone());
    let unready = format!("containers with unready status: [{}]", Kubelet::names(&k.mains));
    let uninitialized = format!("containers with incomplete status: [{}]", Kubelet::names(&k.inits));
    let has_init = !k.inits.is_empty();
    if !k.update(|pod| {
        let st = &mut pod["status"];
        st["phase"] = json!("Pending");
        st["hostIP"] = json!(HOST_IP);
        st["hostIPs"] = json!([{ "ip": HOST_IP }]);
        st["podIP"] = json!(net.ip);
        st["podIPs"] = json!([{ "ip": net.ip }]);
        st["startTime"] = json!(now_rfc3339());
        set_condition(pod, "PodReadyToStartContainers", true, None, None);
        if has_init {
            set_condition(pod, "Initialized", false, Some("ContainersNotInitialized"), Some(&uninitialized));
        } else {
            set_condition(pod, "Initialized", true, None, None);
        }
        set_condition(pod, "Ready", false, Some("ContainersNotReady"), Some(&unready));
        set_condition(pod, "ContainersReady", false, Some("ContainersNotReady"), Some(&unready));
    }) {
        return;
    }
    if !k.wait_for_secrets().await {
        return;
    }
    let volumes = Volumes { root };
    let prepared = {
        let store = shared.store.lock().expect("store lock");
        volumes.prepare(&store, &ns, &pod)
    };
    if let Err(e) = prepared {
        k.event(None, "Warning", "FailedMount", &format!("MountVolume.SetUp failed: {e}"));
        return;
    }
    tokio::time::sleep(delays.start).await;

    // Init containers, in order, each to completion.
    for i in 0..k.inits.len() {
        let Some(proc) = k.start(true, i, &programs, &volumes, &net, &name) else {
            k.finish(true);
            return;
        };
        k.update(|_| {});
        match k.unless_deleted(proc.wait()).await {
            Err(gone) => {
                k.kill(&[(i, proc)], true, gone).await;
                return;
            }
            Ok(code) => {
                k.inits[i].terminate(code, None, None);
                if code != 0 {
                    k.update(|pod| {
                        set_condition(
                            pod,
                            "Initialized",
                            false,
                            Some("ContainersNotInitialized"),
                            Some(&uninitialized),
                        );
                    });
                    k.finish(true);
                    return;
                }
                k.update(|_| {});
            }
        }
    }
    if has_init {
        k.update(|pod| set_condition(pod, "Initialized", true, None, None));
    }

    // Main containers, with their readiness probes.
    let mut procs: Vec<(usize, Process)> = Vec::new();
    for i in 0..k.mains.len() {
        if let Some(p) = k.start(false, i, &programs, &volumes, &net, &name) {
            procs.push((i, p));
        }
    }
    let (probe_tx, mut probe_rx) = mpsc::channel(16);
    let mut probes = AbortOnDrop(Vec::new());
    for (i, c) in k.mains.iter_mut().enumerate() {
        if !c.running() {
            continue;
        }
        if c.spec["readinessProbe"].is_object() {
            let target = ProbeTarget {
                pod: name.clone(),
                index: i,
                container: c.spec.clone(),
                ip: net.ip.clone(),
                ports: net.ports.clone(),
                lag: delays.probe_lag,
            };
            probes.0.push(tokio::spawn(probe::run(shared.clone(), target, probe_tx.clone())));
        } else {
            c.ready = true;
        }
    }
    shared.processes.set_running(&uid, true);
    k.update(|pod| pod["status"]["phase"] = json!("Running"));
    k.set_ready();
    let (exit_tx, mut exit_rx) = mpsc::channel(16);
    for (i, p) in &procs {
        let mut exit = p.exit_watch();
        let (i, tx) = (*i, exit_tx.clone());
        tokio::spawn(async move {
            let code = match exit.wait_for(Option::is_some).await {
                Ok(code) => (*code).unwrap_or(-1),
                Err(_) => return,
            };
            let _ = tx.send((i, code)).await;
        });
    }
    loop {
        if k.mains.iter().all(|c| !c.running()) {
            drop(probes);
            let failed = k.mains.iter().any(|c| c.state["terminated"]["exitCode"].as_i64() != Some(0));
            k.finish(failed);
            return;
        }
        k.changes.borrow_and_update();
        if let Some(gone) = k.gone() {
            drop(probes);
            let running: Vec<(usize, Process)> = procs.into_iter().filter(|(i, _)| k.mains[*i].running()).collect();
            k.kill(&running, false, gone).await;
            return;
        }
        tokio::select! {
            r = k.changes.changed() => if r.is_err() { return },
            Some((i, ready)) = probe_rx.recv() => {
                if k.mains[i].running() {
                    k.mains[i].ready = ready;
                    k.set_ready();
                }
            }
            Some((i, code)) = exit_rx.recv() => {
                k.mains[i].terminate(code, None, None);
                k.update(|_| {});
                let _ = k.set_ready();
            }
        }
    }
}
