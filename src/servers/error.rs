//! [`ServersError`]: why a request about a server's life was not carried out.

use std::time::Duration;

use crate::{runtime::RuntimeError, spec::SpecError};

/// A quota a create or start can run into.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum QuotaKind {
    /// `--max-servers`: every server that exists or is being created.
    Servers { max: usize },
    /// `--max-active PRESET=N`: servers of the preset that are not Stopped.
    Active { preset: String, max: usize },
}

impl std::fmt::Display for QuotaKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            QuotaKind::Servers { max } => write!(
                f,
                "the --max-servers limit of {max} is reached (every server that exists or is being created counts, Stopped ones too); delete one (delete_mcp_server) or wait for a TTL to expire"
            ),
            QuotaKind::Active { preset, max } => write!(
                f,
                "the --max-active limit of {max} for preset `{preset}` is reached (every `{preset}` server that is not Stopped counts, starting ones too); stop one (stop_mcp_server), delete one, or wait for one to go idle"
            ),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum ServersError {
    /// The request itself was refused; nothing was started.
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// A discovery's throwaway server did not get as far as its tools (it is deleted).
    #[error("the throwaway server `{name}` {why}; it has been deleted, nothing is left")]
    Discovery { name: String, why: String },
    #[error("{quota}{}", waited_text(*.waited))]
    Quota { quota: QuotaKind, waited: Option<Duration> },
}

fn waited_text(waited: Option<Duration>) -> String {
    match waited {
        Some(w) => format!(" (waited {}s for a slot: wait_for_capacity_seconds ran out)", w.as_secs()),
        None => String::new(),
    }
}
