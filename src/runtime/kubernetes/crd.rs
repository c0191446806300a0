//! The declarative face: `MCPServer` and `MCPPool` custom resources (`mcp-ephemeral.dev/v1alpha1`),
//! as Rust types from which the CustomResourceDefinitions are generated (`mcp-ephemeral crds`,
//! deploy/kubernetes/crds/). An `MCPServer`'s spec mirrors `create_mcp_server`'s parameters,
//! in the camelCase Kubernetes objects use; secret values never sit in a resource: `secretEnvFrom`
//! names keys of existing Secrets.

use std::collections::BTreeMap;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::{CustomResource, CustomResourceExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::spec::{Egress, ImageTransport};

/// The API group of both resources.
pub const GROUP: &str = "mcp-ephemeral.dev";
/// Their version.
pub const VERSION: &str = "v1alpha1";

/// What runs: the fields `MCPServer` and an `MCPPool`'s template share.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServerTemplate {
    /// A preset name (`mcp-ephemeral presets` lists them), e.g. "time".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preset: Option<String>,
    /// The program to run instead of a preset, e.g. "uvx" or "npx".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_exec: Option<String>,
    /// The MCP package or script it runs, e.g. "mcp-server-fetch".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_mcp: Option<String>,
    /// Extra arguments; with a preset they replace its default arguments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_args: Option<Vec<String>>,
    /// A container image to run instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// How the image speaks MCP: "stdio" (behind the bridge; its command in runtimeArgs) or "http".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_transport: Option<ImageTransport>,
    /// The port an "http" image serves on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_port: Option<u16>,
    /// Plain environment variables.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Secret environment variables, each read from a key of an existing Secret in the namespace.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secret_env_from: Vec<SecretEnvFrom>,
    /// Seconds until the server is deleted (default: the pool's defaultTtlSeconds, else the meta
    /// server's --default-ttl). The resource stays; its status then says the server expired.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_seconds: Option<u64>,
    /// Stop the server after this many seconds without MCP traffic (0: never).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout_seconds: Option<u64>,
    /// Labels for the server (list_mcp_servers label_selector).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// CPU and memory for the server's container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourcesSpec>,
    /// "open" (default) or "none": the cluster's DNS only, enforced by the NetworkPolicy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress: Option<Egress>,
}

/// One secret variable: `name` gets the value of `key` in Secret `secretName`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretEnvFrom {
    /// The variable's name in the server's environment.
    pub name: String,
    /// A Secret in the resource's namespace.
    pub secret_name: String,
    /// The key of that Secret.
    pub key: String,
}

/// Container resources as Kubernetes quantities.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResourcesSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_request: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_limit: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_request: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_limit: Option<String>,
}

/// The resource's spelling (camelCase, as Kubernetes fields are) of a request's `resources`.
impl From<&ResourcesSpec> for crate::spec::Resources {
    fn from(r: &ResourcesSpec) -> Self {
        Self {
            cpu_request: r.cpu_request.clone(),
            cpu_limit: r.cpu_limit.clone(),
            memory_request: r.memory_request.clone(),
            memory_limit: r.memory_limit.clone(),
        }
    }
}

/// An MCP server made and kept by the controller, as `create_mcp_server` would make it.
// Clippy reads the repeated `type_ = "string"` of the printer columns as duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "mcp-ephemeral.dev",
    version = "v1alpha1",
    kind = "MCPServer",
    plural = "mcpservers",
    singular = "mcpserver",
    shortname = "mcps",
    namespaced,
    status = "MCPServerStatus",
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "URL", type_ = "string", json_path = ".status.urls.mcp"),
    printcolumn(name = "Tools", type_ = "string", json_path = ".status.tools"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct MCPServerSpec {
    #[serde(flatten)]
    pub template: ServerTemplate,
    /// The MCPPool this server belongs to: its maxActive, warm members and defaults apply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
    /// true: the server is stopped (its Job suspended); false starts it again.
    #[serde(default)]
    pub stopped: bool,
}

/// What the controller last saw of the server.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MCPServerStatus {
    /// Pending, Starting, Ready, Stopped, Failed, Terminating.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// Why, as a CamelCase word (e.g. PoolFull, IdleTimeout).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The same for a person.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Where clients connect (they carry the server's capability token).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub urls: Option<StatusUrls>,
    /// The server's tool names, once Ready.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_after_ms: Option<u64>,
    /// RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_activity: Option<String>,
    /// The Job that runs it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_name: Option<String>,
    /// The spec generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// A server's URLs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct StatusUrls {
    pub mcp: String,
    pub sse: String,
}

/// A Kubernetes-style condition (`Ready`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    #[serde(rename = "type")]
    pub type_: String,
    /// "True", "False" or "Unknown".
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// RFC 3339: when `status` last changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// A pool of MCPServers: at most `maxActive` of them not Stopped (the rest wait, Pending with
/// reason PoolFull, in creation order), `warm` members kept started ahead, and defaults for its
/// servers' unset fields.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "mcp-ephemeral.dev",
    version = "v1alpha1",
    kind = "MCPPool",
    plural = "mcppools",
    singular = "mcppool",
    shortname = "mcpp",
    namespaced,
    status = "MCPPoolStatus",
    printcolumn(name = "Active", type_ = "integer", json_path = ".status.active"),
    printcolumn(name = "Warm", type_ = "integer", json_path = ".status.warmReady"),
    printcolumn(name = "Pending", type_ = "integer", json_path = ".status.pending"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct MCPPoolSpec {
    /// The preset its servers run unless they say otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preset: Option<String>,
    /// A server template instead of (or on top of) a preset: what its servers run by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<ServerTemplate>,
    /// Members kept started ahead (owned by the pool, hidden from lists), each handed to a new
    /// server of the pool that asks for nothing beyond the pool's defaults.
    #[serde(default)]
    pub warm: u32,
    /// Most servers of the pool that are not Stopped (unset: no limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_active: Option<u32>,
    /// Idle timeout of the pool's servers that set none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_idle_timeout_seconds: Option<u64>,
    /// TTL of the pool's servers that set none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_ttl_seconds: Option<u64>,
}

/// How the pool is used.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MCPPoolStatus {
    /// Its servers that are not Stopped.
    pub active: u32,
    /// Warm members Ready to be handed out.
    pub warm_ready: u32,
    /// Its servers waiting for a slot (PoolFull).
    pub pending: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// Both CustomResourceDefinitions.
pub fn definitions() -> [CustomResourceDefinition; 2] {
    [MCPServer::crd(), MCPPool::crd()]
}

/// Both definitions as one YAML stream (`---`-separated), ready for `kubectl apply -f -`.
pub fn definitions_yaml() -> Result<String, serde_saphyr::ser::Error> {
    Ok(definition_files()?.into_iter().map(|(_, text)| text).collect())
}

/// Each definition as the file deploy/kubernetes/crds/ holds: (file name, YAML document).
pub fn definition_files() -> Result<Vec<(String, String)>, serde_saphyr::ser::Error> {
    definitions()
        .iter()
        .map(|crd| {
            let plural = crd.spec.names.plural.clone();
            Ok((format!("{plural}.yaml"), format!("---\n{}", serde_saphyr::to_string(crd)?)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_mcpserver_reads_like_the_tool_call_and_round_trips() {
        let yaml = r#"
apiVersion: mcp-ephemeral.dev/v1alpha1
kind: MCPServer
metadata: {name: clock, namespace: team}
spec:
  preset: time
  ttlSeconds: 600
  idleTimeoutSeconds: 60
  env: {TZ: UTC}
  secretEnvFrom: [{name: API_KEY, secretName: keys, key: time}]
  labels: {team: blue}
  resources: {cpuLimit: "1"}
  pool: clocks
  stopped: false
"#;
        let s: MCPServer = serde_saphyr::from_str(yaml).expect("parses");
        assert_eq!(s.spec.template.preset.as_deref(), Some("time"));
        assert_eq!(s.spec.template.secret_env_from[0].secret_name, "keys");
        assert_eq!(s.spec.template.resources.as_ref().unwrap().cpu_limit.as_deref(), Some("1"));
        assert_eq!(s.spec.pool.as_deref(), Some("clocks"));
        let back: MCPServer = serde_json::from_value(serde_json::to_value(&s).unwrap()).unwrap();
        assert_eq!(back.spec, s.spec);
    }

    #[test]
    fn deploy_holds_exactly_the_generated_definitions() {
        let files = definition_files().unwrap();
        let on_disk = [
            ("mcpservers.yaml", include_str!("../../../deploy/kubernetes/crds/mcpservers.yaml")),
            ("mcppools.yaml", include_str!("../../../deploy/kubernetes/crds/mcppools.yaml")),
        ];
        assert_eq!(files.len(), on_disk.len());
        for ((name, generated), (file, text)) in files.iter().zip(on_disk) {
            assert_eq!(name, file);
            assert_eq!(
                generated, text,
                "deploy/kubernetes/crds/{file} differs from the types: run `mcp-ephemeral crds --out-dir deploy/kubernetes/crds`"
            );
        }
    }

    #[test]
    fn the_definitions_are_namespaced_with_a_status_subresource_and_columns() {
        let [server, pool] = definitions();
        assert_eq!(server.metadata.name.as_deref(), Some("mcpservers.mcp-ephemeral.dev"));
        assert_eq!(pool.metadata.name.as_deref(), Some("mcppools.mcp-ephemeral.dev"));
        for crd in [&server, &pool] {
            assert_eq!(crd.spec.scope, "Namespaced");
            let v = &crd.spec.versions[0];
            assert_eq!(v.name, VERSION);
            assert!(v.subresources.as_ref().and_then(|s| s.status.as_ref()).is_some());
        }
        let columns: Vec<_> =
            server.spec.versions[0].additional_printer_columns.iter().flatten().map(|c| c.name.as_str()).collect();
        assert_eq!(columns, ["Phase", "URL", "Tools", "Age"]);
        assert_eq!(server.spec.names.short_names.as_deref(), Some(&["mcps".to_string()][..]));
        let yaml = definitions_yaml().unwrap();
        assert_eq!(yaml.matches("---\n").count(), 2);
        assert!(yaml.contains("secretEnvFrom"), "the flattened template is in the schema");
    }
}
