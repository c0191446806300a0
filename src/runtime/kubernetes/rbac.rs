//! Every Kubernetes API access the runtime makes, as RBAC rules. `deploy/kubernetes/role.yaml`
//! must grant exactly what is listed here (a test checks it), and the fake API server in the
//! tests checks that every request the code sends is listed here. Adding an API call means
//! adding it here first.

/// One RBAC rule: API group (`""` is core), resource (`pods/log` for a subresource), verbs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Access {
    pub group: &'static str,
    pub resource: &'static str,
    pub verbs: &'static [&'static str],
}

/// What the Kubernetes runtime does in its namespace. Nothing cluster-wide: the startup check
/// of the namespace (`get namespaces`) is optional and a 403 there is expected.
pub const API_ACCESS: &[Access] = &[
    // create a server; status/list/watch for readiness and listing; delete; patch hands out a
    // warm-pool member (labels, annotations, deadline).
    Access { group: "batch", resource: "jobs", verbs: &["create", "get", "list", "watch", "delete", "patch"] },
    // find a Job's pod, watch it become Ready.
    Access { group: "", resource: "pods", verbs: &["get", "list", "watch"] },
    Access { group: "", resource: "pods/log", verbs: &["get"] },
    // the out-of-cluster gateway tunnels through port-forward (websocket upgrade: get + create).
    Access { group: "", resource: "pods/portforward", verbs: &["get", "create"] },
    Access { group: "", resource: "services", verbs: &["create", "get", "list", "delete"] },
    // the Secret is created before its Job and then given the Job as owner (patch); list and
    // delete sweep Secrets whose Job never came to be (a crash between the two creates).
    Access { group: "", resource: "secrets", verbs: &["create", "get", "list", "delete", "patch"] },
    // one NetworkPolicy per server (--network-policy on): created before its Job, then given
    // the Job as owner (patch); get reads back a create whose answer was lost; list and delete
    // sweep policies whose Job never came to be, and delete removes one with its server.
    Access {
        group: "networking.k8s.io",
        resource: "networkpolicies",
        verbs: &["create", "get", "list", "delete", "patch"],
    },
    // the events of a failing pod go into the error message.
    Access { group: "", resource: "events", verbs: &["list"] },
    // leader election among replicas (lease.rs): read the Lease, create it when missing, take,
    // renew and release it by update (a PUT with the resourceVersion read).
    Access { group: "coordination.k8s.io", resource: "leases", verbs: &["get", "create", "update"] },
    // the controller (--controller): watches MCPServer resources and writes their status;
    // delete_mcp_server (and the TTL) of a resource-made server deletes its resource.
    Access { group: "mcp-ephemeral.dev", resource: "mcpservers", verbs: &["get", "list", "watch", "delete"] },
    Access { group: "mcp-ephemeral.dev", resource: "mcpservers/status", verbs: &["patch"] },
    // a pool's maxActive and defaults, and its status.
    // list: the leader keeps every pool's warm members.
    Access { group: "mcp-ephemeral.dev", resource: "mcppools", verbs: &["get", "list"] },
    Access { group: "mcp-ephemeral.dev", resource: "mcppools/status", verbs: &["patch"] },
];

/// Whether `API_ACCESS` allows `verb` on `group`/`resource`.
pub fn allows(group: &str, resource: &str, verb: &str) -> bool {
    API_ACCESS.iter().any(|a| a.group == group && a.resource == resource && a.verbs.contains(&verb))
}
