//! Containers as local processes. Each runs in its own process group (a signal reaches all it
//! started, as a container's PID namespace would) with `PR_SET_PDEATHSIG`, as the product's
//! bridge spawns its children, and with stdout and stderr kept as the container's log lines.
//! The registry knows every process group the fake started and each process pod's network
//! (pod IP, port map), so port-forward can find a pod and dropping the fake kills everything:
//! no process outlives a test.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Instant,
};

use tokio::{
    io::{AsyncBufReadExt, AsyncRead, BufReader},
    sync::watch,
};

use super::{Shared, programs::Launch, programs::PortMap};

/// One readiness probe the process kubelet ran.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeRecord {
    pub pod: String,
    pub container: String,
    /// `httpGet` or `tcpSocket`.
    pub kind: &'static str,
    /// The HTTP path (empty for tcpSocket).
    pub path: String,
    /// The port the pod spec names, and `podIP:mappedPort` the probe went to.
    pub port: u16,
    pub target: String,
    /// The HTTP status, or 0 for a TCP connect that worked.
    pub status: Option<u16>,
    /// Why it failed (connection refused, timeout, bad status).
    pub error: Option<String>,
    pub success: bool,
    pub at: Instant,
}

/// Where a process pod is reached.
#[derive(Debug, Clone)]
pub(crate) struct PodNet {
    pub ip: String,
    pub ports: PortMap,
    /// Whether its main containers were started (port-forward answers 400 before).
    pub running: bool,
}

/// A container process the fake started.
#[derive(Debug, Clone)]
pub struct StartedProcess {
    pub pod: String,
    pub launch: Launch,
    pub pid: u32,
}

#[derive(Default)]
struct Inner {
    next_ip: u32,
    /// pod uid → its network.
    pods: HashMap<String, PodNet>,
    /// Every process group started, and whether its leader was reaped.
    groups: Vec<(u32, Arc<AtomicBool>)>,
    started: Vec<StartedProcess>,
    probes: Vec<ProbeRecord>,
}

pub(crate) struct Registry {
    inner: Mutex<Inner>,
    pub tunnels: AtomicUsize,
    /// Bumped to break every open port-forward tunnel (a test's fault).
    pub tunnel_drops: tokio::sync::watch::Sender<u64>,
}

impl Default for Registry {
    fn default() -> Self {
        Registry {
            inner: Mutex::default(),
            tunnels: AtomicUsize::new(0),
            tunnel_drops: tokio::sync::watch::channel(0).0,
        }
    }
}

impl Registry {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().expect("process registry lock")
    }

    /// A new pod IP on loopback: 127.0.0.2, 127.0.0.3, … (then 127.0.1.2, …).
    pub fn allocate_ip(&self) -> String {
        let mut inner = self.lock();
        let n = inner.next_ip;
        inner.next_ip += 1;
        format!("127.0.{}.{}", n / 253, n % 253 + 2)
    }

    pub fn add_pod(&self, uid: &str, net: PodNet) {
        self.lock().pods.insert(uid.to_string(), net);
    }

    pub fn set_running(&self, uid: &str, running: bool) {
        if let Some(p) = self.lock().pods.get_mut(uid) {
            p.running = running;
        }
    }

    pub fn remove_pod(&self, uid: &str) {
        self.lock().pods.remove(uid);
    }

    pub fn pod(&self, uid: &str) -> Option<PodNet> {
        self.lock().pods.get(uid).cloned()
    }

    pub fn record_probe(&self, r: ProbeRecord) {
        self.lock().probes.push(r);
    }

    pub fn probes(&self) -> Vec<ProbeRecord> {
        self.lock().probes.clone()
    }

    pub fn started(&self) -> Vec<StartedProcess> {
        self.lock().started.clone()
    }

    /// SIGKILL every process group whose leader still runs (the fake is going away).
    pub fn kill_all(&self) {
        for (pgid, exited) in &self.lock().groups {
            if !exited.load(Ordering::SeqCst) {
                signal_group(*pgid, libc::SIGKILL);
            }
        }
    }
}

fn signal_group(pgid: u32, signal: libc::c_int) {
    // SAFETY: killpg only sends a signal.
    unsafe {
        libc::killpg(pgid as libc::pid_t, signal);
    }
}

/// A running (or finished) container process. Dropping it kills its process group if the
/// leader has not exited.
pub(crate) struct Process {
    pub pid: u32,
    exited: Arc<AtomicBool>,
    exit: watch::Receiver<Option<i32>>,
}

impl Process {
    /// Spawn `launch` for container `launch.container` of pod `pod` (uid `uid`); its output goes
    /// to the pod's log under the container's name.
    pub fn spawn(shared: &Arc<Shared>, pod: &str, uid: &str, launch: &Launch) -> std::io::Result<Process> {
        let mut cmd = tokio::process::Command::new(&launch.program);
        cmd.args(&launch.args)
            .env_clear()
            .envs(launch.env.iter().map(|(k, v)| (k, v)))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .process_group(0)
            .kill_on_drop(false);
        if let Some(dir) = &launch.cwd {
            cmd.current_dir(dir);
        }
        // SAFETY: prctl is async-signal-safe and only sets a flag on the new process.
        unsafe {
            cmd.pre_exec(|| {
                // The container dies with the test even if the test is SIGKILLed. The signal
                // fires when the forking thread exits; tokio workers live as long as the runtime.
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
                Ok(())
            });
        }
        let mut child = cmd.spawn()?;
        let pid = child.id().unwrap_or_default();
        let exited = Arc::new(AtomicBool::new(false));
        {
            let mut reg = shared.processes.lock();
            reg.groups.push((pid, exited.clone()));
            reg.started.push(StartedProcess { pod: pod.to_string(), launch: launch.clone(), pid });
        }
        let tag = format!("{pod}/{}", launch.container);
        if let Some(out) = child.stdout.take() {
            tokio::spawn(keep_lines(shared.clone(), uid.to_string(), launch.container.clone(), tag.clone(), out));
        }
        if let Some(err) = child.stderr.take() {
            tokio::spawn(keep_lines(shared.clone(), uid.to_string(), launch.container.clone(), tag, err));
        }
        let (tx, exit) = watch::channel(None);
        let flag = exited.clone();
        tokio::spawn(async move {
            let code = match child.wait().await {
                Ok(status) => {
                    use std::os::unix::process::ExitStatusExt;
                    status.code().or_else(|| status.signal().map(|s| 128 + s)).unwrap_or(-1)
                }
                Err(_) => -1,
            };
            flag.store(true, Ordering::SeqCst);
            let _ = tx.send(Some(code));
        });
        Ok(Process { pid, exited, exit })
    }

    pub fn signal(&self, signal: libc::c_int) {
        if !self.exited.load(Ordering::SeqCst) {
            signal_group(self.pid, signal);
        }
    }

    pub fn exit_watch(&self) -> watch::Receiver<Option<i32>> {
        self.exit.clone()
    }

    pub fn exit_code(&self) -> Option<i32> {
        *self.exit.borrow()
    }

    /// Wait for the leader to exit; its exit code (128 + signal when killed).
    pub async fn wait(&self) -> i32 {
        let mut exit = self.exit.clone();
        match exit.wait_for(Option::is_some).await {
            Ok(code) => code.unwrap_or(-1),
            Err(_) => -1,
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.signal(libc::SIGKILL);
    }
}

async fn keep_lines(shared: Arc<Shared>, uid: String, container: String, tag: String, out: impl AsyncRead + Unpin) {
    let mut lines = BufReader::new(out).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        eprintln!("[fake-kubelet {tag}] {line}");
        let mut store = shared.store.lock().expect("store lock");
        store.logs.entry(uid.clone()).or_default().by_container.entry(container.clone()).or_default().push(line);
    }
}
