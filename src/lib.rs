//! mcp-ephemeral: a meta-MCP server whose tools spawn MCP servers on demand, hand back URLs to
//! reach them, report their status and tear them down.

pub mod bridge;
pub mod cli;
pub mod gateway;
pub mod http_guard;
pub mod mcp;
pub mod names;
pub mod pool;
pub mod presets;
pub mod runtime;
pub mod session;
pub mod spec;
pub mod transport;
