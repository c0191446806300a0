//! Integration tests: the real binary, real MCP servers from PyPI and npm, real HTTP.
//! One test binary with a module per area (fewer binaries link faster).

#[path = "../support/fake_kube/mod.rs"]
mod fake_kube;
#[path = "../support/procfs.rs"]
mod procfs;
mod support;

/// Bad requests get clear tool errors and change nothing.
mod bad_input;
/// The bridge command: isolation between sessions, readiness, failures.
mod bridge;
/// Capability URLs: only the token opens a server, through every door; never logged.
mod capability;
/// A local server's environment: the kept variables, --pass-env and its own, nothing else.
mod child_env;
/// MCPServer and MCPPool resources reconciled by the controller (fake API server).
mod declarative;
/// deploy/kubernetes/: exactly the RBAC the runtime uses, a locked-down pod, kubectl accepts it.
mod deploy;
/// list_mcp_server_tools: schemas, prompts and resources, on both runtimes.
mod discovery;
/// The fake's custom resources (CRDs, status subresource, owner GC, finalizers, Leases), with kube
/// and kubectl.
mod fake_crds;
/// The fake Kubernetes API server in tests/support/fake_kube, checked with the real kube client.
mod fake_kube_selftest;
/// Misbehaving servers (exit mid-call, stdout garbage, no initialize, stderr flood, SIGTERM
/// ignored): clear errors, no hang, no leak.
mod faults;
/// The fake's process kubelet: pods as real processes, real probes, real port-forward tunnels.
mod kubelet;
/// `serve --runtime kubernetes` against the fake API server: objects, readiness, faults, restarts.
mod kubernetes;
/// Two replicas against one fake: one leader (a Lease) keeps pools and reaps; a killed one is
/// replaced within 15 s, nothing done twice.
mod leader;
/// create → connect over streamable HTTP and SSE → call → list → delete, over stdio and HTTP.
mod lifecycle;
/// /metrics: behind the meta server's token, Prometheus text, counters that move with a
/// create and a delete; --metrics-listen in stdio mode; the standalone bridge's own registry.
mod metrics;
/// Mounted tools appear, answer and disappear, with tools/list_changed.
mod mounting;
/// Each Kubernetes server's NetworkPolicy (fake): owned by its Job, who it lets in, egress none,
/// --network-policy off, bad selectors refused.
mod network_policy;
/// Property tests (proptest, in place of fuzzing) of every parser of untrusted input.
mod properties;
/// Quotas under concurrency: exactly --max-servers servers, on both runtimes.
mod quotas;
/// Nothing outlives the meta server.
mod shutdown;
/// Churn and load, then no leaked process, memory or descriptor (ignored: minutes).
mod soak;
/// Stopped servers: idle timeout, stop/start, wake on request, restarts (local and fake).
mod stopping;
