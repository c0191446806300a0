//! What a server offers, as it described it: its tools with their schemas (from `tools/list`),
//! and the names of its prompts and resources. The probe reads it once, at readiness; the
//! bridge serves it at `GET /catalog`, so the meta server can show it for a pod as for a local
//! server (`list_mcp_server_tools`). Kept apart from `/status`, which is read often and stays
//! small.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A server's tools, prompts and resources.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Catalog {
    /// Each tool as the server described it: `name`, `description`, `inputSchema`, and
    /// `title`, `outputSchema`, `annotations` when it gave them.
    pub tools: Vec<ToolSpec>,
    /// Prompt names, when the server has prompts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub prompts: Vec<String>,
    /// Resource URIs, and resource template URI templates, when the server has resources.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resources: Vec<String>,
}

/// One tool, as `tools/list` gave it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ToolSpec {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// JSON Schema of the arguments.
    #[serde(default)]
    pub input_schema: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_schema: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<Value>,
}

impl ToolSpec {
    /// A tool of a `tools/list` answer; `None` without a name.
    pub(crate) fn from_listed(tool: &Value) -> Option<ToolSpec> {
        let text = |k: &str| tool[k].as_str().map(str::to_owned);
        let present = |k: &str| tool.get(k).filter(|v| !v.is_null()).cloned();
        Some(ToolSpec {
            name: text("name")?,
            title: text("title"),
            description: text("description"),
            input_schema: present("inputSchema").unwrap_or_else(|| serde_json::json!({"type": "object"})),
            output_schema: present("outputSchema"),
            annotations: present("annotations"),
        })
    }
}

impl Catalog {
    pub fn tool_names(&self) -> Vec<String> {
        self.tools.iter().map(|t| t.name.clone()).collect()
    }
}
