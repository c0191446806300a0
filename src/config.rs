//! The second stage of configuration: flags as clap parsed them ([`crate::cli`]) become a
//! checked configuration, with every problem reported at once before anything starts. What is
//! decided here (which transport, which runtime, where the gateway goes) is decided once.

use std::{collections::BTreeMap, net::SocketAddr, time::Duration};

use crate::{
    bridge::{BridgeConfig, ChildCommand, Inherit, http::SessionLimits},
    cli::{BridgeArgs, ControllerArg, ImageTransportArg, KubeArgs, ServeArgs, ServerAuthArg, Switch, Transport},
    declarative::ControllerMode,
    http::{Guard, capability::Capability},
    presets::Presets,
    runtime::{
        RuntimeKind,
        kubernetes::{manifests::JobSettings, network_policy::PolicySettings},
        local::LocalConfig,
    },
    servers::{Policy, ServerAuth},
    spec::ImageTransport,
};

/// Every problem found in the flags, one per line.
#[derive(Debug, thiserror::Error)]
#[error("{}", .0.join("\n"))]
pub struct ConfigError(pub Vec<String>);

/// How clients reach the meta server.
pub(crate) enum Front {
    /// One client on stdin/stdout.
    Stdio,
    /// Streamable HTTP and SSE on `listen`, behind `guard`; servers' URLs through the gateway
    /// start with `public_url` when it is given.
    Http { listen: SocketAddr, guard: Guard, public_url: Option<String> },
}

/// Where servers run, with that runtime's settings.
pub(crate) enum RuntimeConfig {
    Local(LocalConfig),
    Kubernetes(KubeConfig),
}

/// Settings of `--runtime kubernetes`.
pub(crate) struct KubeConfig {
    pub(crate) context: Option<String>,
    pub(crate) namespace: Option<String>,
    pub(crate) jobs: JobSettings,
    /// Out of cluster: where the gateway listens, when not on the HTTP front door.
    pub(crate) gateway_listen: Option<SocketAddr>,
    /// Each server's NetworkPolicy (`None`: `--network-policy off`).
    pub(crate) network_policy: Option<PolicySettings>,
    /// Whether MCPServer resources are reconciled.
    pub(crate) controller: ControllerMode,
    /// Compete for the leader Lease (`--leader-election on`), or always lead.
    pub(crate) leader_election: bool,
}

/// A checked `serve`.
pub(crate) struct ServeConfig {
    pub(crate) front: Front,
    pub(crate) runtime: RuntimeConfig,
    pub(crate) presets: Presets,
    pub(crate) policy: Policy,
    /// Warm pools: preset name → members (from preset files, then `--warm-pool`).
    pub(crate) pools: BTreeMap<String, usize>,
    /// `--metrics-listen`: `/metrics` on a listener of its own, behind its guard.
    pub(crate) metrics_listen: Option<(SocketAddr, Guard)>,
}

/// A checked standalone `bridge`.
pub(crate) struct BridgeRun {
    pub(crate) listen: SocketAddr,
    pub(crate) guard: Guard,
    pub(crate) bridge: BridgeConfig,
    /// The capability token MCP requests must carry in their path (`--token-env`).
    pub(crate) token: Option<Capability>,
    /// Keep serving when the server fails to start, instead of exiting 1.
    pub(crate) stay_on_failure: bool,
}

/// Host names a listener accepts: `None` for any (a wildcard address with no explicit list).
pub(crate) fn allowed_hosts(listen: SocketAddr, extra: &[String]) -> Option<Vec<String>> {
    if listen.ip().is_unspecified() && extra.is_empty() {
        return None;
    }
    let mut hosts = Guard::loopback_hosts();
    if !listen.ip().is_unspecified() {
        hosts.push(match listen.ip() {
            std::net::IpAddr::V6(ip) => format!("[{ip}]"),
            ip => ip.to_string(),
        });
    }
    hosts.extend(extra.iter().cloned());
    Some(hosts)
}

impl ServeArgs {
    /// Check the flags together and build the configuration; returns every problem found.
    pub(crate) fn into_config(self) -> Result<ServeConfig, ConfigError> {
        let mut problems = self.problems();
        let presets = Presets::load(self.presets_dir.as_deref()).map_err(|e| problems.push(e.to_string())).ok();
        let mut pools: BTreeMap<String, usize> = presets
            .iter()
            .flat_map(|p| p.iter())
            .filter(|p| p.warm_pool > 0)
            .map(|p| (p.name.clone(), p.warm_pool))
            .collect();
        pools.extend(self.warm_pools.iter().cloned());
        let mut max_active: BTreeMap<String, usize> =
            presets.iter().flat_map(|p| p.iter()).filter_map(|p| Some((p.name.clone(), p.max_active?))).collect();
        max_active.extend(self.max_active.iter().cloned());
        if let Some(presets) = &presets {
            let unknown = |flag: &str, name: &str| {
                format!("{flag}: unknown preset `{name}`; available presets: {}", presets.names().join(", "))
            };
            for name in pools.keys().filter(|n| presets.get(n).is_none()) {
                problems.push(unknown("--warm-pool", name));
            }
            for name in max_active.keys().filter(|n| presets.get(n).is_none()) {
                problems.push(unknown("--max-active", name));
            }
        }
        let network = self.kube.network_policy().map_err(|e| problems.push(e));
        let (Some(presets), true, Ok(network)) = (presets, problems.is_empty(), network) else {
            return Err(ConfigError(problems));
        };
        let front = match self.transport {
            Transport::Stdio => Front::Stdio,
            Transport::Http => Front::Http {
                listen: self.listen,
                public_url: self.public_url.as_ref().map(|u| u.trim_end_matches('/').to_string()),
                guard: Guard {
                    allowed_hosts: allowed_hosts(self.listen, &self.allowed_hosts),
                    token: self.auth_token.clone().filter(|t| !t.is_empty()),
                },
            },
        };
        let runtime = match self.runtime {
            RuntimeKind::Local => {
                let pass_env = self.pass_env.clone();
                RuntimeConfig::Local(LocalConfig { init_timeout: self.ready_timeout, pass_env, ..Default::default() })
            }
            RuntimeKind::Kubernetes => RuntimeConfig::Kubernetes(self.kube_config(network)),
        };
        let policy = Policy {
            default_ttl: self.default_ttl,
            max_ttl: self.max_ttl,
            max_servers: self.max_servers,
            max_active,
            default_idle_timeout: self.default_idle_timeout.filter(|d| !d.is_zero()),
            ready_timeout: self.ready_timeout,
            server_auth: match self.server_auth {
                ServerAuthArg::Token => ServerAuth::Token,
                ServerAuthArg::None => ServerAuth::None,
            },
        };
        let token = self.auth_token.clone().filter(|t| !t.is_empty());
        let metrics_listen = self
            .metrics_listen
            .map(|addr| (addr, Guard { allowed_hosts: allowed_hosts(addr, &self.allowed_hosts), token }));
        Ok(ServeConfig { front, runtime, presets, policy, pools, metrics_listen })
    }

    /// What is wrong with the combination of flags.
    fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.transport == Transport::Http
            && !self.listen.ip().is_loopback()
            && self.auth_token.as_deref().is_none_or(str::is_empty)
            && !self.insecure_no_auth
        {
            problems.push(format!(
                "--listen {} is reachable from other machines: set --auth-token (or MCP_EPHEMERAL_TOKEN), or pass --insecure-no-auth if something else authenticates",
                self.listen
            ));
        }
        if let Some(addr) = self.metrics_listen
            && !addr.ip().is_loopback()
            && self.auth_token.as_deref().is_none_or(str::is_empty)
            && !self.insecure_no_auth
        {
            problems.push(format!(
                "--metrics-listen {addr} is reachable from other machines: set --auth-token (or MCP_EPHEMERAL_TOKEN), or pass --insecure-no-auth if something else authenticates"
            ));
        }
        if self.auth_token.as_deref().is_some_and(|t| t.len() < 16) {
            problems.push("--auth-token must be at least 16 characters".into());
        }
        if self.default_ttl.is_zero() || self.default_ttl > self.max_ttl {
            problems.push(format!(
                "--default-ttl must be more than 0 and at most --max-ttl ({})",
                humantime::format_duration(self.max_ttl)
            ));
        }
        if let Some(url) = &self.public_url
            && (!(url.starts_with("http://") || url.starts_with("https://")) || url.contains(['?', '#', ' ']))
        {
            problems.push(format!("--public-url `{url}` must be an http:// or https:// URL without query or fragment"));
        }
        if self.default_idle_timeout.is_some_and(|d| d > self.max_ttl) {
            problems.push("--default-idle-timeout must be at most --max-ttl".into());
        }
        for name in &self.pass_env {
            if crate::bridge::NEVER_PASSED.contains(&name.as_str()) {
                problems.push(format!("--pass-env {name}: a token of the meta server's never reaches a server"));
            } else if crate::spec::check_env("--pass-env", &BTreeMap::from([(name.clone(), String::new())])).is_err() {
                problems.push(format!("--pass-env `{name}` is not an environment variable name"));
            }
        }
        if self.max_servers == 0 {
            problems.push("--max-servers must be at least 1".into());
        }
        problems
    }

    fn kube_config(&self, network_policy: Option<PolicySettings>) -> KubeConfig {
        let kube = &self.kube;
        let mut jobs = JobSettings::default();
        if let Some(image) = &kube.server_image {
            jobs.server_image = image.clone();
        }
        jobs.image_transport = match kube.image_transport {
            ImageTransportArg::Stdio => ImageTransport::Stdio,
            ImageTransportArg::Http => ImageTransport::Http,
        };
        jobs.image_port = kube.image_port;
        jobs.keep_finished_secs = kube.keep_finished.as_secs().min(i32::MAX as u64) as i32;
        KubeConfig {
            context: kube.context.clone(),
            namespace: kube.namespace.clone(),
            jobs,
            gateway_listen: kube.gateway_listen,
            network_policy,
            controller: match kube.controller {
                ControllerArg::Auto => ControllerMode::Auto,
                ControllerArg::On => ControllerMode::On,
                ControllerArg::Off => ControllerMode::Off,
            },
            leader_election: kube.leader_election == Switch::On,
        }
    }
}

impl KubeArgs {
    /// `--network-policy` and `--client-selector`, checked (also with the local runtime: a bad
    /// flag is a mistake either way); `None` when off.
    fn network_policy(&self) -> Result<Option<PolicySettings>, String> {
        let settings = PolicySettings::new(&self.client_selector)?;
        Ok((self.network_policy == Switch::On).then_some(settings))
    }
}

impl BridgeArgs {
    /// The standalone bridge's configuration.
    pub(crate) fn into_config(self) -> Result<BridgeRun, ConfigError> {
        let token = match &self.token_env {
            None => None,
            Some(name) => Some(token_from_env(name).map_err(|e| ConfigError(vec![e]))?),
        };
        let mut command = ChildCommand::new(self.command, Vec::new());
        // The token is the bridge's, not the server's.
        command.inherit = Inherit::All { hide: self.token_env.into_iter().collect() };
        let mut bridge = BridgeConfig::new(command);
        bridge.init_timeout = self.init_timeout;
        bridge.spares = self.spares;
        bridge.limits = SessionLimits { max_sessions: self.max_sessions, idle_timeout: self.session_idle_timeout };
        bridge.echo_stderr = true;
        let guard = Guard { allowed_hosts: allowed_hosts(self.listen, &self.allowed_hosts), token: None };
        Ok(BridgeRun { listen: self.listen, guard, bridge, token, stay_on_failure: self.stay_on_failure })
    }
}

/// `--token-env NAME`: the variable must hold a token as strong as the ones made here.
fn token_from_env(name: &str) -> Result<Capability, String> {
    let value =
        std::env::var(name).map_err(|_| format!("--token-env {name}: the variable is not set (or not UTF-8)"))?;
    Capability::parse(value.trim()).map_err(|e| format!("--token-env {name}: {e}"))
}

/// How long shutdown may take before the process gives up waiting (children are SIGKILLed
/// well before).
pub(crate) const SHUTDOWN_LIMIT: Duration = Duration::from_secs(5);
