//! [`ServersError`]: why a request about a server's life was not carried out.

use crate::{runtime::RuntimeError, spec::SpecError};

#[derive(Debug, thiserror::Error)]
pub(crate) enum ServersError {
    /// The request itself was refused; nothing was started.
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error("the limit of {0} servers is reached; delete one (delete_mcp_server) or wait for a TTL to expire")]
    Quota(usize),
}
