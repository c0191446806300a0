//! mcp-ephemeral: a meta-MCP server whose tools spawn MCP servers on demand, hand back URLs to
//! reach them, report their status and tear them down.
//!
//! The layers, top to bottom (nothing imports upward): `commands` wires a checked `config`
//! together; `mcp` is the MCP face and talks only to `servers`, the one owner of a server's
//! life; `servers` holds the `runtime` (local processes behind a `bridge`, or Kubernetes Jobs
//! reached through the `gateway`); `spec`, `presets`, `names`, `http` and `tasks` are shared
//! vocabulary and plumbing.

pub mod bridge;
pub mod cli;
pub mod commands;
pub mod config;
pub mod declarative;
pub(crate) mod gateway;
pub mod http;
pub mod mcp;
pub mod metrics;
pub mod names;
pub mod presets;
pub mod runtime;
pub mod servers;
pub mod spec;
pub mod tasks;
