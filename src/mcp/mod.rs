//! The meta server's MCP face: the tools of the contract (DESIGN.md), mounted servers' tools,
//! prompts and resources, the `config://version` resource, and the `list_changed`
//! notifications to every client.

mod error;
mod mount_names;
pub mod mounts;
pub mod params;
pub(crate) mod reply;
mod server;
pub(crate) mod transport;

pub(crate) use server::MetaServer;
