//! [`PodDialer`]: opens a byte stream to the MCP port of a server's running pod, for the
//! connection pool that the gateway, the readiness confirmation and status reads share. In the
//! cluster it connects to the pod IP; outside it opens a port-forward stream. The pod comes
//! from the [`PodDirectory`] (a watch), so a dial costs no lookup request.

use k8s_openapi::api::core::v1::Pod;
use kube::{Api, ResourceExt};

use super::{
    directory::PodDirectory,
    pods,
    portforward::{self, TunnelError},
};
use crate::{
    gateway::{Dialer, GatewayError},
    http::Stream,
    tasks::Tasks,
};

pub(crate) struct PodDialer {
    pods: Api<Pod>,
    directory: PodDirectory,
    in_cluster: bool,
    tasks: Tasks,
}

impl PodDialer {
    pub(crate) fn new(pods: Api<Pod>, directory: PodDirectory, in_cluster: bool, tasks: Tasks) -> PodDialer {
        PodDialer { pods, directory, in_cluster, tasks }
    }

    /// A stream to the server port of `pod`.
    async fn open(&self, pod: &Pod) -> Result<Box<dyn Stream>, TunnelError> {
        let port = pods::server_port(pod);
        if !self.in_cluster {
            return portforward::open(&self.pods, &pod.name_any(), port, &self.tasks).await;
        }
        let ip = pod.status.as_ref().and_then(|s| s.pod_ip.clone()).ok_or(TunnelError::NoPodIp)?;
        let tcp = tokio::net::TcpStream::connect((ip.as_str(), port)).await.map_err(TunnelError::Connect)?;
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
        Ok(Box::new(tcp))
    }
}

impl Dialer for PodDialer {
    fn dial<'a>(&'a self, job: &'a str) -> futures::future::BoxFuture<'a, Result<Box<dyn Stream>, GatewayError>> {
        Box::pin(async move {
            let tunnel = |why| GatewayError::Tunnel { job: job.to_string(), why: Box::new(why) };
            let pod = self.directory.running(job).await.map_err(|e| tunnel(TunnelError::FindPod(e)))?;
            let pod = pod.ok_or_else(|| GatewayError::NotFound(job.to_string()))?;
            if !pods::is_running(&pod) {
                return Err(GatewayError::NotRunning { job: job.to_string(), why: "its pod is not running".into() });
            }
            self.open(&pod).await.map_err(tunnel)
        })
    }

    fn has_pod(&self, job: &str) -> bool {
        self.directory.has_running(job)
    }
}
