//! Prometheus metrics: one [`Registry`] per process, written at `/metrics` in the Prometheus
//! text format. A [`Metrics`] handle is a cheap clone of shared families; every part that
//! counts something holds one and records with a one-line call. The meta server's registry
//! holds every family (its local runtime's in-process bridges report into it); a standalone
//! bridge's holds only the bridge's.
//!
//! Recording never blocks and never does I/O. What is cheaper to read than to follow (the servers
//! by phase, the warm pools) is read by a hook just before a scrape is encoded; such a hook
//! must not make the scrape wait for the runtime (see `servers/census.rs`).

mod bridge;
mod controller;
mod endpoint;
mod gateway;
mod servers;

use std::sync::{Arc, Mutex};

use prometheus_client::registry::Registry;

/// Every family the meta server's `/metrics` has (warm-pool sizes only with `--warm-pool`).
pub const META_FAMILIES: [&str; 16] = [
    "mcp_ephemeral_servers",
    "mcp_ephemeral_creates_total",
    "mcp_ephemeral_deletes_total",
    "mcp_ephemeral_stops_total",
    "mcp_ephemeral_starts_total",
    "mcp_ephemeral_wakes_total",
    "mcp_ephemeral_create_ready_seconds",
    "mcp_ephemeral_gateway_requests_total",
    "mcp_ephemeral_gateway_request_seconds",
    "mcp_ephemeral_gateway_tunnels",
    "mcp_ephemeral_bridge_sessions",
    "mcp_ephemeral_bridge_calls_total",
    "mcp_ephemeral_bridge_child_exits_total",
    "mcp_ephemeral_controller_reconciles_total",
    "mcp_ephemeral_controller_reconcile_errors_total",
    "mcp_ephemeral_controller_reconcile_seconds",
];

pub(crate) use bridge::BridgeMetrics;
pub(crate) use controller::{ControllerMetrics, ReconcileOutcome, ResourceKind};
pub(crate) use gateway::GatewayMetrics;
pub(crate) use servers::{Outcome, ServerMetrics};

/// A label whose values are a closed set: an enum, written as fixed lowercase text, whose every
/// value is known up front (so a family can show each one at 0 before anything happened).
macro_rules! label_values {
    ($(#[$meta:meta])* $vis:vis enum $name:ident { $($(#[$vmeta:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        $vis enum $name { $($(#[$vmeta])* $variant),+ }

        impl $name {
            /// Every value, in declaration order.
            #[allow(dead_code, reason = "not every label's values are all written up front")]
            pub(crate) const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The label value as it is written.
            pub(crate) fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl prometheus_client::encoding::EncodeLabelValue for $name {
            fn encode(&self, encoder: &mut prometheus_client::encoding::LabelValueEncoder) -> std::fmt::Result {
                std::fmt::Write::write_str(encoder, self.as_str())
            }
        }
    };
}
pub(crate) use label_values;

/// Every family name starts with this (and `_`).
const PREFIX: &str = "mcp_ephemeral";

/// Reads something into the families just before a scrape is encoded.
type ScrapeHook = Box<dyn Fn() + Send + Sync>;

struct Inner {
    registry: Registry,
    hooks: Mutex<Vec<ScrapeHook>>,
    servers: ServerMetrics,
    gateway: GatewayMetrics,
    bridge: BridgeMetrics,
    controller: ControllerMetrics,
}

/// The metrics of this process. Cloning shares them.
#[derive(Clone)]
pub(crate) struct Metrics(Arc<Inner>);

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

/// Which families a registry shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Face {
    /// `serve`: every family.
    Meta,
    /// A standalone `bridge`: its sessions, calls and child exits.
    Bridge,
    /// Nothing is shown (tests, and bridges made without a registry); recording still works.
    Detached,
}

impl Default for Metrics {
    /// A handle whose registry shows nothing.
    fn default() -> Self {
        Metrics::new(Face::Detached)
    }
}

impl Metrics {
    /// The meta server's metrics: servers, gateway, in-process bridges, controller.
    pub(crate) fn meta() -> Metrics {
        Metrics::new(Face::Meta)
    }

    /// A standalone bridge's metrics.
    pub(crate) fn bridge_only() -> Metrics {
        Metrics::new(Face::Bridge)
    }

    fn new(face: Face) -> Metrics {
        let mut registry = Registry::with_prefix(PREFIX);
        let (servers, gateway, bridge, controller) = (
            ServerMetrics::default(),
            GatewayMetrics::default(),
            BridgeMetrics::default(),
            ControllerMetrics::default(),
        );
        match face {
            Face::Meta => {
                servers.register(&mut registry);
                gateway.register(&mut registry);
                bridge.register(&mut registry);
                controller.register(&mut registry);
            }
            Face::Bridge => bridge.register(&mut registry),
            Face::Detached => {}
        }
        Metrics(Arc::new(Inner { registry, hooks: Mutex::default(), servers, gateway, bridge, controller }))
    }

    pub(crate) fn servers(&self) -> &ServerMetrics {
        &self.0.servers
    }

    pub(crate) fn gateway(&self) -> &GatewayMetrics {
        &self.0.gateway
    }

    pub(crate) fn bridge(&self) -> &BridgeMetrics {
        &self.0.bridge
    }

    /// Count one reconcile of the controller: of which kind of resource, how it ended, and how
    /// long it took (once per MCPServer pass, and once per MCPPool in each look of the warm
    /// loop).
    pub(crate) fn reconciled(&self, kind: ResourceKind, outcome: ReconcileOutcome, took: std::time::Duration) {
        self.0.controller.reconciled(kind, outcome, took);
    }

    /// Run `hook` before every scrape, to read into the families what is cheaper to read than
    /// to follow. It must return at once (no I/O, no waiting on locks held across I/O).
    pub(crate) fn before_scrape(&self, hook: impl Fn() + Send + Sync + 'static) {
        self.0.hooks.lock().expect("metrics hooks poisoned").push(Box::new(hook));
    }

    /// The registry in the Prometheus text format (version 0.0.4), after the scrape hooks ran.
    pub(crate) fn render(&self) -> String {
        for hook in self.0.hooks.lock().expect("metrics hooks poisoned").iter() {
            hook();
        }
        let mut text = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut text, &self.0.registry)
            .expect("writing to a String cannot fail");
        text
    }

    /// `GET /metrics`, for a router whose guard decides who may read it.
    pub(crate) fn router(&self) -> axum::Router {
        endpoint::router(self.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `name` of every `# TYPE name kind` line, and every sample line's metric name.
    fn families_and_samples(text: &str) -> (Vec<String>, Vec<String>) {
        let typed =
            text.lines().filter_map(|l| l.strip_prefix("# TYPE ")).map(|l| l.split(' ').next().unwrap().to_string());
        let samples = text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .map(|l| l.split(['{', ' ']).next().unwrap().to_string());
        (typed.collect(), samples.collect())
    }

    #[test]
    fn every_family_of_the_meta_server_is_named_helped_and_typed() {
        let metrics = Metrics::meta();
        metrics.servers().census(servers::RuntimeLabel::Local, []);
        let text = metrics.render();
        let (typed, samples) = families_and_samples(&text);
        for name in META_FAMILIES {
            assert!(typed.iter().any(|t| t == name), "no # TYPE for {name} in\n{text}");
            assert!(text.contains(&format!("# HELP {name} ")), "no # HELP for {name}");
        }
        for sample in samples {
            let family = ["_bucket", "_sum", "_count"].iter().find_map(|s| sample.strip_suffix(s)).unwrap_or(&sample);
            assert!(typed.iter().any(|t| t == family || t == &sample), "{sample} belongs to no typed family");
        }
    }

    #[test]
    fn outcomes_read_zero_before_anything_happened_and_count_after() {
        let metrics = Metrics::meta();
        let zero = r#"mcp_ephemeral_creates_total{outcome="success"} 0"#;
        assert!(metrics.render().contains(zero));
        metrics.servers().created(Outcome::Success);
        assert!(metrics.render().contains(r#"mcp_ephemeral_creates_total{outcome="success"} 1"#));
        assert!(
            metrics
                .render()
                .contains(r#"mcp_ephemeral_controller_reconciles_total{kind="mcpserver",outcome="error"} 0"#)
        );
    }

    #[test]
    fn a_standalone_bridge_shows_only_the_bridge_and_a_detached_handle_nothing() {
        let bridge = Metrics::bridge_only().render();
        assert!(bridge.contains("mcp_ephemeral_bridge_sessions"));
        assert!(!bridge.contains("mcp_ephemeral_creates_total"));
        assert!(Metrics::default().render().trim().is_empty());
    }

    #[test]
    fn scrape_hooks_run_before_the_text_is_written() {
        let metrics = Metrics::meta();
        let gauge = metrics.gateway().clone();
        metrics.before_scrape(move || gauge.set_tunnels(3));
        assert!(metrics.render().contains("mcp_ephemeral_gateway_tunnels 3"));
    }
}
