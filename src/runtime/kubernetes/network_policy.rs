//! A server's NetworkPolicy, as a pure function of its spec (like `manifests.rs`, no I/O): who
//! may reach its pod, and where it may connect. The runtime creates it before the Job, so the
//! pod never runs without it, then makes the Job its owner: it goes with the server.
//!
//! Ingress: TCP to the server's port only, from the meta server's pods
//! (`mcp-ephemeral.dev/role: meta`) and from pods matching the client selector
//! (`--client-selector`), both in the server's namespace. Egress: open; with `egress: "none"`,
//! only DNS (UDP and TCP 53) to the cluster DNS pods (`k8s-app: kube-dns` in `kube-system`).
//! Nothing here is enforced unless the cluster's network plugin enforces NetworkPolicy.

use k8s_openapi::{
    api::networking::v1::{
        NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort,
        NetworkPolicySpec,
    },
    apimachinery::pkg::{
        apis::meta::v1::{LabelSelector, ObjectMeta},
        util::intstr::IntOrString,
    },
};

use super::manifests::{self, JobSettings};
use crate::{
    runtime::standard_labels,
    spec::{self, Egress, ServerSpec},
};

/// The label of the meta server's pods (deploy/kubernetes/deployment.yaml): they may reach
/// every server, for readiness checks, status and the gateway.
pub(crate) const LABEL_ROLE: &str = "mcp-ephemeral.dev/role";
pub(crate) const ROLE_META: &str = "meta";
/// Which other pods may reach servers unless `--client-selector` says.
pub const DEFAULT_CLIENT_SELECTOR: &str = "mcp-ephemeral.dev/client=true";
/// Where `egress: "none"` servers may still send DNS queries: the cluster DNS pods (CoreDNS
/// carries `k8s-app: kube-dns` on kubeadm, kind, k3s, GKE, EKS and AKS) in `kube-system`.
const DNS_NAMESPACE: &str = "kube-system";
const DNS_POD_LABEL: (&str, &str) = ("k8s-app", "kube-dns");
/// The label every namespace carries with its own name (Kubernetes 1.22+).
const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// `--network-policy on`: what every server's NetworkPolicy lets in besides the meta server.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct PolicySettings {
    /// The pods, in the servers' namespace, that may call servers.
    clients: LabelSelector,
}

impl PolicySettings {
    /// The settings for `--client-selector text`, or the sentence that says what is wrong.
    pub(crate) fn new(client_selector: &str) -> Result<PolicySettings, String> {
        let problem = |why: String| format!("--client-selector `{client_selector}`: {why}");
        let parsed = spec::LabelSelector::parse(client_selector).map_err(|e| problem(e.to_string()))?;
        let clients = parsed.to_kube();
        if clients == LabelSelector::default() {
            return Err(problem(format!(
                "an empty selector would let every pod of the namespace in; name a label the client pods carry (the default is {DEFAULT_CLIENT_SELECTOR}), or pass --network-policy off"
            )));
        }
        let labels = clients.match_labels.iter().flatten().map(|(k, v)| (k.as_str(), v.as_str()));
        let expressions = clients.match_expressions.iter().flatten().flat_map(|e| {
            std::iter::once((e.key.as_str(), "")).chain(e.values.iter().flatten().map(|v| (e.key.as_str(), v.as_str())))
        });
        for (key, value) in labels.chain(expressions) {
            spec::check_label(key, value).map_err(|e| problem(e.to_string()))?;
        }
        Ok(PolicySettings { clients })
    }
}

fn selector(labels: impl IntoIterator<Item = (String, String)>) -> LabelSelector {
    LabelSelector { match_labels: Some(labels.into_iter().collect()), match_expressions: None }
}

fn pods(selector: LabelSelector) -> NetworkPolicyPeer {
    NetworkPolicyPeer { pod_selector: Some(selector), ..Default::default() }
}

fn port(protocol: &str, number: u16) -> NetworkPolicyPort {
    NetworkPolicyPort {
        protocol: Some(protocol.into()),
        port: Some(IntOrString::Int(number.into())),
        ..Default::default()
    }
}

/// The NetworkPolicy of `spec`'s server, named as its Job, selecting its pods. Created without
/// an owner (before the Job exists); the runtime sets the Job as owner once it does.
pub(crate) fn network_policy(spec: &ServerSpec, jobs: &JobSettings, settings: &PolicySettings) -> NetworkPolicy {
    let name = &spec.identity.name;
    // The port the pod listens on (8080, or an `http` image's own port): a NetworkPolicy
    // speaks of the pod's ports, not the Service's.
    let (listen, _) = manifests::endpoint(spec, jobs);
    let meta = selector([(LABEL_ROLE.to_string(), ROLE_META.to_string())]);
    let ingress = NetworkPolicyIngressRule {
        from: Some(vec![pods(meta), pods(settings.clients.clone())]),
        ports: Some(vec![port("TCP", listen)]),
    };
    let (policy_types, egress) = match spec.launch.egress {
        Egress::Open => (vec!["Ingress".to_string()], None),
        Egress::None => {
            let dns = NetworkPolicyPeer {
                namespace_selector: Some(selector([(NAMESPACE_NAME_LABEL.to_string(), DNS_NAMESPACE.to_string())])),
                pod_selector: Some(selector([(DNS_POD_LABEL.0.to_string(), DNS_POD_LABEL.1.to_string())])),
                ..Default::default()
            };
            let rule =
                NetworkPolicyEgressRule { to: Some(vec![dns]), ports: Some(vec![port("UDP", 53), port("TCP", 53)]) };
            (vec!["Ingress".to_string(), "Egress".to_string()], Some(vec![rule]))
        }
    };
    NetworkPolicy {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            labels: Some(standard_labels(&spec.identity)),
            ..Default::default()
        },
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(selector(manifests::selector(name))),
            policy_types: Some(policy_types),
            ingress: Some(vec![ingress]),
            egress,
        }),
    }
}

#[cfg(test)]
mod tests {
    use std::{
        collections::BTreeMap,
        time::{Duration, UNIX_EPOCH},
    };

    use super::*;
    use crate::spec::{Identity, ImageTransport, Launch, Resources, Source};

    fn spec(egress: Egress, source: Source) -> ServerSpec {
        let created_at = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let mut identity = Identity::fresh("time", Some("time".into()), BTreeMap::new(), Duration::from_secs(600));
        identity.name = "time-abcd1234".into();
        identity.created_at = created_at;
        identity.expires_at = created_at + Duration::from_secs(600);
        ServerSpec {
            identity,
            launch: Launch {
                source,
                env: BTreeMap::new(),
                secret_env: BTreeMap::new(),
                needs_kube_api: false,
                resources: Resources::default(),
                command_image: None,
                egress,
            },
        }
    }

    fn time(egress: Egress) -> ServerSpec {
        spec(egress, Source::Command { argv: vec!["uvx".into(), "mcp-server-time".into()] })
    }

    fn settings(selector: &str) -> PolicySettings {
        PolicySettings::new(selector).expect("a valid selector")
    }

    /// The `matchLabels` of each ingress peer.
    fn peers(policy: &NetworkPolicy) -> Vec<BTreeMap<String, String>> {
        let rules = policy.spec.as_ref().and_then(|s| s.ingress.clone()).unwrap_or_default();
        rules
            .iter()
            .flat_map(|r| r.from.iter().flatten())
            .filter_map(|p| p.pod_selector.as_ref()?.match_labels.clone())
            .collect()
    }

    fn yaml(policy: &NetworkPolicy) -> String {
        serde_saphyr::to_string(policy).expect("yaml")
    }

    #[test]
    fn open_egress_policy_lets_in_the_meta_server_and_clients_on_the_servers_port_only() {
        let policy = network_policy(&time(Egress::Open), &JobSettings::default(), &settings(DEFAULT_CLIENT_SELECTOR));
        insta::assert_snapshot!(yaml(&policy));
        let spec = policy.spec.as_ref().unwrap();
        assert_eq!(spec.policy_types.as_deref(), Some(&["Ingress".to_string()][..]), "egress stays open");
        assert!(spec.egress.is_none());
    }

    #[test]
    fn no_egress_policy_allows_dns_to_kube_dns_and_nothing_else() {
        let policy = network_policy(&time(Egress::None), &JobSettings::default(), &settings(DEFAULT_CLIENT_SELECTOR));
        insta::assert_snapshot!(yaml(&policy));
        let spec = policy.spec.as_ref().unwrap();
        assert_eq!(spec.policy_types.as_deref(), Some(&["Ingress".to_string(), "Egress".to_string()][..]));
        let egress = spec.egress.as_ref().unwrap();
        assert_eq!(egress.len(), 1, "one rule: DNS");
        let ports: Vec<(String, IntOrString)> =
            egress[0].ports.iter().flatten().map(|p| (p.protocol.clone().unwrap(), p.port.clone().unwrap())).collect();
        assert_eq!(ports, [("UDP".into(), IntOrString::Int(53)), ("TCP".into(), IntOrString::Int(53))]);
    }

    #[test]
    fn an_http_image_is_let_in_on_its_own_port() {
        let image = Source::Image {
            image: "example.com/weather:1".into(),
            args: vec![],
            transport: Some(ImageTransport::Http),
            port: Some(3000),
        };
        let policy = network_policy(&spec(Egress::Open, image), &JobSettings::default(), &settings("team=a"));
        let ports = policy.spec.unwrap().ingress.unwrap()[0].ports.clone().unwrap();
        assert_eq!(ports[0].port, Some(IntOrString::Int(3000)));
    }

    #[test]
    fn a_custom_client_selector_replaces_the_default_and_keeps_the_meta_server() {
        let policy = network_policy(&time(Egress::Open), &JobSettings::default(), &settings("team=a,agent"));
        let peers = peers(&policy);
        assert_eq!(peers[0], BTreeMap::from([(LABEL_ROLE.to_string(), ROLE_META.to_string())]));
        assert_eq!(peers[1], BTreeMap::from([("team".to_string(), "a".to_string())]));
        let clients = &policy.spec.as_ref().unwrap().ingress.as_ref().unwrap()[0].from.as_ref().unwrap()[1];
        let exprs = clients.pod_selector.as_ref().unwrap().match_expressions.clone().unwrap();
        assert_eq!((exprs[0].key.as_str(), exprs[0].operator.as_str()), ("agent", "Exists"));
    }

    #[test]
    fn bad_client_selectors_are_refused_with_the_reason() {
        for (bad, says) in [
            ("", "empty selector"),
            (" , ", "empty selector"),
            ("a b=c", "not `key=value`"),
            ("team=-x", "value `-x`"),
            ("bad key!=x", "not `key=value`"),
            ("Example.COM/x=y", "key `Example.COM/x`"),
            ("env in (a,b)", "not `key=value`"),
        ] {
            let err = PolicySettings::new(bad).unwrap_err();
            assert!(err.starts_with("--client-selector") && err.contains(says), "{bad:?}: {err}");
        }
    }
}
