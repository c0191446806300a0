//! The process kubelet's test seam: how a container of a pod spec becomes a local command.
//! Nothing here starts a process or writes to the store; `process_kubelet` does that.
//!
//! - **Programs**: `command[0]`, and any argument that is an absolute path, is looked up in the
//!   table the test gives (`mcp-ephemeral`, `/usr/local/bin/mcp-ephemeral` → the built binary);
//!   other programs run as found on the host's PATH (`cp`, `uvx`, `sh`).
//! - **Mounts**: each volume of the pod is a per-pod directory; an argument (or `workingDir`) equal
//!   to a mount path or starting with `mountPath/` is rewritten to that directory. Everything else
//!   of the host's filesystem is visible, unlike in a container.
//! - **Ports**: every `containerPort` and the port of a `--listen HOST:PORT` / `--listen=HOST:PORT`
//!   argument is mapped to a free local port (HOST stays as the pod asked, so a process that binds
//!   127.0.0.1 is unreachable at its pod IP, as in a real pod). The port is found by binding
//!   `0.0.0.0:0` and closing it right before the spawn: the kernel hands out ephemeral ports in
//!   turn, so another process taking the same one in the few milliseconds before the container
//!   binds it is unlikely, and if it happens the container fails to bind and the test fails
//!   loudly rather than passing wrongly. (Letting the process bind port 0 would need the product
//!   to report its port, which a real pod never does.)
//! - **Environment**: a container gets only what the pod spec gives it (`envFrom`, then `env`,
//!   which wins), `HOSTNAME`, and the host variables the test lets through (`PATH`, `HOME`, CA
//!   and proxy settings, the uv/npm caches), as an image's own `ENV` would.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
};

use serde_json::Value;

use super::{
    discovery,
    store::{Key, Store},
};

/// What the process kubelet may run: the program table and the host variables every container
/// gets. `FakeConfig::processes(Programs::new().program("mcp-ephemeral", BIN))`.
#[derive(Debug, Clone)]
pub struct Programs {
    /// Program name or absolute path in the image → local executable.
    pub table: Vec<(String, PathBuf)>,
    /// Host environment variables passed to every container when set; `PREFIX_*` passes all
    /// that start with `PREFIX_`.
    pub inherit_env: Vec<String>,
}

impl Default for Programs {
    fn default() -> Self {
        Programs::new()
    }
}

impl Programs {
    /// An empty table; `PATH`, `HOME`, the CA and proxy settings and the uv/npm/XDG variables
    /// are inherited (what an image's `ENV` and a cluster's proxy settings would give).
    pub fn new() -> Self {
        let inherit = [
            "PATH",
            "HOME",
            "LANG",
            "SSL_CERT_FILE",
            "SSL_CERT_DIR",
            "NODE_EXTRA_CA_CERTS",
            "REQUESTS_CA_BUNDLE",
            "HTTP_PROXY",
            "HTTPS_PROXY",
            "NO_PROXY",
            "http_proxy",
            "https_proxy",
            "no_proxy",
            "UV_*",
            "XDG_*",
            "PIP_*",
            "npm_config_*",
            "NPM_CONFIG_*",
        ];
        Programs { table: Vec::new(), inherit_env: inherit.iter().map(|s| s.to_string()).collect() }
    }

    /// Run `path` where a pod runs `name`.
    pub fn program(mut self, name: &str, path: impl Into<PathBuf>) -> Self {
        self.table.push((name.into(), path.into()));
        self
    }

    /// Also pass the host's `var` to every container.
    pub fn inherit(mut self, var: &str) -> Self {
        self.inherit_env.push(var.into());
        self
    }

    fn lookup(&self, name: &str) -> Option<&Path> {
        self.table.iter().find(|(n, _)| n == name).map(|(_, p)| p.as_path())
    }
}

/// A container as a local command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launch {
    pub container: String,
    pub program: String,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub cwd: Option<PathBuf>,
}

/// A pod's volumes as directories under `root`, made on demand.
pub(crate) struct Volumes {
    pub root: PathBuf,
}

impl Volumes {
    pub fn dir(&self, volume: &str) -> PathBuf {
        self.root.join("volumes").join(volume)
    }

    /// Make every volume's directory; a Secret volume gets one file per key.
    pub fn prepare(&self, store: &Store, ns: &str, pod: &Value) -> std::io::Result<()> {
        for v in pod["spec"]["volumes"].as_array().into_iter().flatten() {
            let dir = self.dir(v["name"].as_str().unwrap_or_default());
            std::fs::create_dir_all(&dir)?;
            if let Some(name) = v["secret"]["secretName"].as_str() {
                for (k, val) in secret_data(store, ns, name) {
                    std::fs::write(dir.join(k), val)?;
                }
            }
        }
        Ok(())
    }

    /// (mountPath, directory) of a container, longest path first.
    fn mounts(&self, container: &Value) -> Vec<(String, PathBuf)> {
        let mut m: Vec<(String, PathBuf)> = container["volumeMounts"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|vm| {
                let path = vm["mountPath"].as_str()?.trim_end_matches('/').to_string();
                (!path.is_empty()).then(|| (path, self.dir(vm["name"].as_str().unwrap_or_default())))
            })
            .collect();
        m.sort_by_key(|(p, _)| std::cmp::Reverse(p.len()));
        m
    }
}

fn rewrite_mount(arg: &str, mounts: &[(String, PathBuf)]) -> Option<String> {
    mounts.iter().find_map(|(path, dir)| {
        let rest = arg.strip_prefix(path.as_str())?;
        (rest.is_empty() || rest.starts_with('/')).then(|| format!("{}{rest}", dir.display()))
    })
}

/// Container port → the local port it is reached at.
pub(crate) type PortMap = HashMap<u16, u16>;

/// A port nobody listens on now (see the module doc for why the race is acceptable).
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("0.0.0.0:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("fake_kube: a free port")
}

/// The ports of every container of `pod`, mapped to free local ports.
pub(crate) fn map_ports(pod: &Value) -> PortMap {
    let mut map = PortMap::new();
    for c in pod["spec"]["containers"].as_array().into_iter().flatten() {
        let declared = c["ports"].as_array().into_iter().flatten().filter_map(|p| p["containerPort"].as_u64());
        let args: Vec<&str> = c["args"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
        let listened = listen_ports(&args);
        for port in declared.map(|p| p as u16).chain(listened) {
            map.entry(port).or_insert_with(free_port);
        }
    }
    map
}

fn listen_ports(args: &[&str]) -> Vec<u16> {
    let mut out = Vec::new();
    for (i, a) in args.iter().enumerate() {
        let value = match a.strip_prefix("--listen=") {
            Some(v) => Some(v),
            None if *a == "--listen" => args.get(i + 1).copied(),
            None => None,
        };
        if let Some(port) = value.and_then(|v| v.rsplit_once(':')).and_then(|(_, p)| p.parse().ok()) {
            out.push(port);
        }
    }
    out
}

fn rewrite_listen(value: &str, ports: &PortMap) -> String {
    match value.rsplit_once(':').and_then(|(h, p)| Some((h, ports.get(&p.parse().ok()?)?))) {
        Some((host, mapped)) => format!("{host}:{mapped}"),
        None => value.to_string(),
    }
}

/// A container port (number or name) as the local port it is reached at; an unmapped number
/// stays itself (nothing listens there, as in a pod).
pub(crate) fn resolve_port(port: &Value, container: &Value, ports: &PortMap) -> u16 {
    let number = match port {
        Value::Number(n) => n.as_u64().unwrap_or_default() as u16,
        Value::String(name) => match name.parse::<u16>() {
            Ok(n) => n,
            Err(_) => container["ports"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|p| p["name"] == name.as_str())
                .and_then(|p| p["containerPort"].as_u64())
                .unwrap_or_default() as u16,
        },
        _ => 0,
    };
    ports.get(&number).copied().unwrap_or(number)
}

fn secret_data(store: &Store, ns: &str, name: &str) -> Vec<(String, Vec<u8>)> {
    let rt = discovery::by_resource("", "secrets").expect("secrets type");
    let Some(secret) = store.get(&Key::new(rt, ns, name)).cloned() else { return Vec::new() };
    let Ok(secret) = serde_json::from_value::<k8s_openapi::api::core::v1::Secret>(secret) else { return Vec::new() };
    let mut out: Vec<(String, Vec<u8>)> = secret.data.into_iter().flatten().map(|(k, v)| (k, v.0)).collect();
    out.extend(secret.string_data.into_iter().flatten().map(|(k, v)| (k, v.into_bytes())));
    out
}

fn config_map_data(store: &Store, ns: &str, name: &str) -> Vec<(String, String)> {
    let Some(rt) = discovery::by_resource("", "configmaps") else { return Vec::new() };
    let Some(cm) = store.get(&Key::new(rt, ns, name)) else { return Vec::new() };
    cm["data"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
        .collect()
}

/// The environment of `container`: inherited host variables, `HOSTNAME`, `envFrom`, `env`.
fn environment(programs: &Programs, store: &Store, ns: &str, pod: &Value, container: &Value) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = Vec::new();
    let mut set = |k: String, v: String| match env.iter_mut().find(|(n, _)| *n == k) {
        Some(e) => e.1 = v,
        None => env.push((k, v)),
    };
    for (k, v) in std::env::vars() {
        let inherited = programs.inherit_env.iter().any(|var| match var.strip_suffix('*') {
            Some(prefix) => k.starts_with(prefix),
            None => *var == k,
        });
        if inherited {
            set(k, v);
        }
    }
    set("HOSTNAME".into(), pod["metadata"]["name"].as_str().unwrap_or_default().into());
    for ef in container["envFrom"].as_array().into_iter().flatten() {
        let prefix = ef["prefix"].as_str().unwrap_or_default();
        if let Some(name) = ef["secretRef"]["name"].as_str() {
            for (k, v) in secret_data(store, ns, name) {
                set(format!("{prefix}{k}"), String::from_utf8_lossy(&v).into_owned());
            }
        }
        if let Some(name) = ef["configMapRef"]["name"].as_str() {
            for (k, v) in config_map_data(store, ns, name) {
                set(format!("{prefix}{k}"), v);
            }
        }
    }
    for e in container["env"].as_array().into_iter().flatten() {
        let Some(name) = e["name"].as_str() else { continue };
        let from = &e["valueFrom"];
        let value = if let Some(v) = e["value"].as_str() {
            Some(v.to_string())
        } else if let (Some(s), Some(key)) =
            (from["secretKeyRef"]["name"].as_str(), from["secretKeyRef"]["key"].as_str())
        {
            secret_data(store, ns, s)
                .into_iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| String::from_utf8_lossy(&v).into())
        } else if let Some(path) = from["fieldRef"]["fieldPath"].as_str() {
            match path {
                "metadata.name" => pod["metadata"]["name"].as_str().map(String::from),
                "metadata.namespace" => Some(ns.to_string()),
                "metadata.uid" => pod["metadata"]["uid"].as_str().map(String::from),
                "status.podIP" => pod["status"]["podIP"].as_str().map(String::from),
                "spec.nodeName" => pod["spec"]["nodeName"].as_str().map(String::from),
                _ => None,
            }
        } else {
            None
        };
        set(name.into(), value.unwrap_or_default());
    }
    env
}

/// `container` of `pod` as a local command (see the module doc for the rewrites).
pub(crate) fn launch(
    programs: &Programs,
    store: &Store,
    ns: &str,
    pod: &Value,
    container: &Value,
    volumes: &Volumes,
    ports: &PortMap,
) -> Launch {
    let mounts = volumes.mounts(container);
    let strings = |field: &str| -> Vec<String> {
        container[field].as_array().into_iter().flatten().filter_map(Value::as_str).map(String::from).collect()
    };
    let mut argv = strings("command");
    argv.extend(strings("args"));
    let mut listen_next = false;
    let argv: Vec<String> = argv
        .iter()
        .enumerate()
        .map(|(i, a)| {
            let listen = std::mem::replace(&mut listen_next, a == "--listen");
            if listen {
                return rewrite_listen(a, ports);
            }
            if let Some(v) = a.strip_prefix("--listen=") {
                return format!("--listen={}", rewrite_listen(v, ports));
            }
            if (i == 0 || a.starts_with('/'))
                && let Some(p) = programs.lookup(a)
            {
                return p.display().to_string();
            }
            rewrite_mount(a, &mounts).unwrap_or_else(|| a.clone())
        })
        .collect();
    let (program, args) = match argv.split_first() {
        Some((p, rest)) => (p.clone(), rest.to_vec()),
        None => (String::new(), Vec::new()),
    };
    let cwd = container["workingDir"]
        .as_str()
        .filter(|d| !d.is_empty())
        .map(|d| PathBuf::from(rewrite_mount(d, &mounts).unwrap_or_else(|| d.to_string())));
    Launch {
        container: container["name"].as_str().unwrap_or_default().to_string(),
        program,
        args,
        env: environment(programs, store, ns, pod, container),
        cwd,
    }
}
