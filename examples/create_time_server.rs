//! Create a `time` server through a running meta server, call one of its tools, delete it.
//!
//! Start the meta server over HTTP first, then run the example:
//!
//! ```text
//! mcp-ephemeral serve --transport http --listen 127.0.0.1:8000
//! cargo run --example create_time_server -- http://127.0.0.1:8000/mcp
//! ```
//!
//! The `time` preset runs `uvx mcp-server-time`, so `uvx` must be on the meta server's PATH.

use anyhow::{Context, bail};
use rmcp::{
    RoleClient, ServiceExt,
    model::{CallToolRequestParams, CallToolResult, JsonObject},
    object,
    service::RunningService,
    transport::StreamableHttpClientTransport,
};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let meta_url = std::env::args().nth(1).unwrap_or_else(|| "http://127.0.0.1:8000/mcp".into());

    println!("connecting to the meta server at {meta_url}");
    let meta = ()
        .serve(StreamableHttpClientTransport::from_uri(meta_url.clone()))
        .await
        .with_context(|| format!("cannot connect to {meta_url}; is `mcp-ephemeral serve --transport http` running?"))?;

    let created = call(&meta, "create_mcp_server", object!({"preset": "time", "wait_for_ready": true})).await?;
    let server = created.structured_content.context("create_mcp_server returned no structured content")?;
    let job_name = server["job_name"].as_str().context("no job_name in the result")?.to_string();
    let url = server["urls"]["mcp"].as_str().context("no urls.mcp in the result")?.to_string();
    println!("created {job_name} ({}), reachable at {url}", server["phase"]);

    // Use the new server, then delete it whatever happened.
    let used = use_time_server(&url).await;

    let deleted = call(&meta, "delete_mcp_server", object!({"job_name": job_name, "wait_for_deletion": true})).await;
    meta.cancel().await?;
    used?;
    let deleted = deleted?;
    println!("deleted: {}", text(&deleted));
    Ok(())
}

/// Connect to the created server with a client of its own and ask it for the time.
async fn use_time_server(url: &str) -> anyhow::Result<()> {
    let client = ().serve(StreamableHttpClientTransport::from_uri(url.to_string())).await?;
    let tools = client.list_all_tools().await?;
    let names: Vec<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
    println!("its tools: {}", names.join(", "));
    let result = call(&client, "get_current_time", object!({"timezone": "UTC"})).await;
    client.cancel().await?;
    println!("get_current_time(UTC) -> {}", text(&result?));
    Ok(())
}

/// Call a tool; a tool error (`isError: true`) becomes an `Err` with the tool's message.
async fn call(
    client: &RunningService<RoleClient, ()>,
    tool: &'static str,
    args: JsonObject,
) -> anyhow::Result<CallToolResult> {
    let result = client
        .call_tool(CallToolRequestParams::new(tool).with_arguments(args))
        .await
        .with_context(|| format!("calling {tool}"))?;
    if result.is_error == Some(true) {
        bail!("{tool} failed: {}", text(&result));
    }
    Ok(result)
}

/// The text blocks of a result, one per line.
fn text(result: &CallToolResult) -> String {
    result.content.iter().filter_map(|c| c.as_text()).map(|t| t.text.as_str()).collect::<Vec<_>>().join("\n")
}
