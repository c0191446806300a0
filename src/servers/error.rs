//! [`ServersError`]: why a request about a server's life was not carried out.

use crate::{runtime::RuntimeError, spec::SpecError};

#[derive(Debug, thiserror::Error)]
pub(crate) enum ServersError {
    /// The request itself was refused; nothing was started.
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error(
        "the --max-servers limit of {0} is reached (every server that exists or is being created counts); delete one (delete_mcp_server) or wait for a TTL to expire"
    )]
    Quota(usize),
}
