//! Tool results: structured content (with an output schema) plus text. The first text block is
//! the JSON itself, as the MCP spec asks for clients without structured-content support (and as
//! mcp-ephemeral-k8s clients parse it); the second is one short sentence for a person.
//!
//! The type is named `Json` on purpose: rmcp's `#[tool]` macro derives the output schema from a
//! return type spelled `Json<T>`.

use rmcp::{
    ErrorData,
    handler::server::tool::IntoCallToolResult,
    model::{CallToolResponse, CallToolResult, ContentBlock},
    schemars::JsonSchema,
};
use serde::Serialize;

/// A result with a one-line summary.
pub(crate) trait Summary {
    fn summary(&self) -> String;
}

pub(crate) struct Json<T>(pub T);

impl<T: Serialize + JsonSchema + Summary + 'static> IntoCallToolResult for Json<T> {
    fn into_call_tool_result(self) -> Result<CallToolResponse, ErrorData> {
        let summary = self.0.summary();
        let value = serde_json::to_value(&self.0)
            .map_err(|e| ErrorData::internal_error(format!("cannot serialize the result: {e}"), None))?;
        let mut result = CallToolResult::structured(value);
        result.content.push(ContentBlock::text(summary));
        Ok(result.into())
    }
}

impl<T: JsonSchema> JsonSchema for Json<T> {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        T::schema_name()
    }
    fn json_schema(generator: &mut rmcp::schemars::SchemaGenerator) -> rmcp::schemars::Schema {
        T::json_schema(generator)
    }
}
