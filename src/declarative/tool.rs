//! `create_mcp_server(pool=…)`: a tool-made server in an `MCPPool`. It takes the pool's
//! defaults for what the request leaves unset and counts against the pool's `maxActive`, after
//! the pool's resources that wait for a slot (they were first).

use std::sync::Arc;

use super::{Context, ReconcileError, pools, reconcile};
use crate::{
    runtime::kubernetes::crd::ServerTemplate,
    servers::{CreateRequest, Servers},
};

/// Why a tool create cannot go into a pool.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PoolError {
    #[error("`pool` needs --runtime kubernetes with the MCPServer/MCPPool CRDs installed")]
    NoCluster,
    #[error("no MCPPool named `{pool}` in namespace `{namespace}`; kubectl get mcppools lists them")]
    Missing { pool: String, namespace: String },
    #[error(
        "MCPPool `{pool}` runs its maxActive of {max} servers (with {waiting} more waiting); stop or delete one of them, or try again later"
    )]
    Full { pool: String, max: u32, waiting: usize },
    #[error("MCPPool `{pool}`: {why}")]
    Defaults { pool: String, why: String },
    #[error("reading MCPPool `{pool}`: {source}")]
    Read {
        pool: String,
        #[source]
        source: ReconcileError,
    },
}

/// `req` with the pool's defaults filled in, or why the pool cannot take another server now.
pub(crate) async fn pooled(
    servers: &Arc<Servers>,
    pool: &str,
    mut req: CreateRequest,
) -> Result<CreateRequest, PoolError> {
    let (client, namespace) = servers.kubernetes().ok_or(PoolError::NoCluster)?;
    let ctx = Context { servers: servers.clone(), client, namespace, claims: Default::default() };
    let read = |source| PoolError::Read { pool: pool.to_string(), source };
    let found = pools::get(&ctx, pool).await.map_err(read)?;
    let found = found.ok_or_else(|| PoolError::Missing { pool: pool.to_string(), namespace: ctx.namespace.clone() })?;
    let occupancy = pools::occupancy(&ctx, pool).await.map_err(read)?;
    if let Some(max) = found.spec.max_active
        && occupancy.active + occupancy.waiting.len() >= max as usize
    {
        return Err(PoolError::Full { pool: pool.to_string(), max, waiting: occupancy.waiting.len() });
    }
    let template = pools::with_defaults(&ServerTemplate::default(), &found);
    let base =
        reconcile::request(&ctx, &template).await.map_err(|why| PoolError::Defaults { pool: pool.to_string(), why })?;
    let has_source = req.preset.is_some() || req.runtime_exec.is_some() || req.image.is_some();
    if !has_source {
        req.preset = base.preset;
        req.runtime_exec = base.runtime_exec;
        req.runtime_mcp = req.runtime_mcp.or(base.runtime_mcp);
        req.runtime_args = req.runtime_args.or(base.runtime_args);
        req.image = base.image;
        req.image_transport = req.image_transport.or(base.image_transport);
        req.image_port = req.image_port.or(base.image_port);
    }
    req.env = merged(req.env, base.env);
    req.secret_env = merged(req.secret_env, base.secret_env);
    req.labels = merged(req.labels, base.labels);
    req.resources = req.resources.or(base.resources);
    req.egress = req.egress.or(base.egress);
    req.ttl_seconds = req.ttl_seconds.or(base.ttl_seconds);
    req.idle_timeout_seconds = req.idle_timeout_seconds.or(base.idle_timeout_seconds);
    Ok(req)
}

/// The request's map over the pool's (the request wins).
fn merged<V>(
    own: Option<std::collections::BTreeMap<String, V>>,
    pool: Option<std::collections::BTreeMap<String, V>>,
) -> Option<std::collections::BTreeMap<String, V>> {
    match (own, pool) {
        (Some(mut own), Some(pool)) => {
            for (k, v) in pool {
                own.entry(k).or_insert(v);
            }
            Some(own)
        }
        (own, pool) => own.or(pool),
    }
}
