//! Connecting to the cluster: kubeconfig (`KUBECONFIG`, `~/.kube/config`, `--context`) or the
//! pod's service account, the namespace to work in, and a startup check that turns a missing
//! namespace, an unreachable API server or missing permissions into one line saying what to do.

use k8s_openapi::api::{batch::v1::Job, core::v1::Namespace};
use kube::{Api, Client, Config, api::ListParams, config::KubeConfigOptions};

use super::retry::{self, ApiError};

/// A checked connection.
#[derive(Clone)]
pub(crate) struct Connection {
    pub(crate) client: Client,
    pub(crate) namespace: String,
    /// Running in a pod (service-account config): Service DNS names are reachable.
    pub(crate) in_cluster: bool,
    /// The API server, for messages.
    pub(crate) server: String,
}

/// Why the Kubernetes runtime cannot start. Each message is one line.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("cannot load the kubeconfig context `{context}`: {why}")]
    Context { context: String, why: String },
    #[error(
        "no Kubernetes configuration: no usable kubeconfig ({kubeconfig}) and not running in a pod ({in_cluster}); set KUBECONFIG or run in a cluster"
    )]
    NoConfig { kubeconfig: String, in_cluster: String },
    #[error("cannot build a Kubernetes client for {server}: {why}")]
    Client { server: String, why: String },
    #[error(
        "cannot reach the Kubernetes API server at {server}: {why}; check KUBECONFIG / --context and that the cluster is up"
    )]
    Unreachable { server: String, why: String },
    #[error("namespace `{0}` does not exist; create it (kubectl create namespace {0}) or pass --namespace")]
    NoNamespace(String),
    #[error(
        "the Kubernetes API refused to list jobs in namespace `{namespace}`: {why}; grant the Role in deploy/kubernetes/role.yaml"
    )]
    Forbidden { namespace: String, why: String },
    #[error("the Kubernetes API server at {server} answered with an error: {why}")]
    Api { server: String, why: String },
}

/// Load the configuration, pick the namespace and check both against the API server.
pub(crate) async fn connect(context: Option<&str>, namespace: Option<&str>) -> Result<Connection, ConnectError> {
    let (config, in_cluster) = match context {
        Some(ctx) => {
            let opts = KubeConfigOptions { context: Some(ctx.to_string()), ..Default::default() };
            let config = Config::from_kubeconfig(&opts)
                .await
                .map_err(|e| ConnectError::Context { context: ctx.to_string(), why: e.to_string() })?;
            (config, false)
        }
        None => match Config::from_kubeconfig(&KubeConfigOptions::default()).await {
            Ok(config) => (config, false),
            Err(kubeconfig) => match Config::incluster() {
                Ok(config) => (config, true),
                Err(in_cluster) => {
                    return Err(ConnectError::NoConfig {
                        kubeconfig: kubeconfig.to_string(),
                        in_cluster: in_cluster.to_string(),
                    });
                }
            },
        },
    };
    let server = config.cluster_url.to_string().trim_end_matches('/').to_string();
    let namespace = namespace.map(str::to_string).unwrap_or_else(|| config.default_namespace.clone());
    let client = super::transport::client(config)
        .map_err(|e| ConnectError::Client { server: server.clone(), why: e.to_string() })?;
    let conn = Connection { client, namespace, in_cluster, server };
    check(&conn).await?;
    Ok(conn)
}

/// The namespace exists and we may list Jobs in it. `get namespaces` is cluster-scoped and a
/// least-privilege service account may not have it: then listing Jobs is the check.
async fn check(conn: &Connection) -> Result<(), ConnectError> {
    let server = conn.server.clone();
    let unreachable = |e: ApiError| match e {
        ApiError::Kube(kube::Error::Api(s)) => ConnectError::Api { server: server.clone(), why: s.message.clone() },
        other => ConnectError::Unreachable { server: server.clone(), why: error_chain(&other) },
    };
    let namespaces: Api<Namespace> = Api::all(conn.client.clone());
    match retry::call("get namespace", || namespaces.get(&conn.namespace)).await {
        Ok(_) => return Ok(()),
        Err(e) if e.is_not_found() => return Err(ConnectError::NoNamespace(conn.namespace.clone())),
        Err(e) if e.is_forbidden() => {}
        Err(e) => return Err(unreachable(e)),
    }
    let jobs: Api<Job> = Api::namespaced(conn.client.clone(), &conn.namespace);
    let one = ListParams::default().limit(1);
    match retry::call("list jobs", || jobs.list(&one)).await {
        Ok(_) => Ok(()),
        Err(ApiError::Kube(kube::Error::Api(s))) if s.is_forbidden() => {
            Err(ConnectError::Forbidden { namespace: conn.namespace.clone(), why: s.message.clone() })
        }
        Err(e) => Err(unreachable(e)),
    }
}

/// `error: cause: cause`, on one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let part = s.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = s.source();
    }
    text
}
