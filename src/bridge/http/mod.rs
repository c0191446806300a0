//! The MCP-over-HTTP session layer: upstream pipes, JSON-RPC envelopes, the relay of each session,
//! the session table and its two faces (streamable HTTP at `/mcp`, legacy SSE at `/sse`). This
//! layer knows nothing of processes: an upstream is two channels and, maybe, an [`EndReason`].

mod batch;
mod envelope;
mod events;
mod relay;
mod session;
mod sse;
mod streamable;
mod upstream;

pub use session::SessionLimits;
pub(crate) use session::{OpenError, Opened, SessionOpener, SessionTable};
pub(crate) use sse::routes as sse_routes;
pub(crate) use streamable::routes as streamable_routes;
pub(crate) use upstream::{EndReason, Upstream};
