//! Reaching a server's pod from outside the cluster: a [`Dialer`] for the gateway that finds
//! the Job's running pod and opens a port-forward stream to its MCP port through the API
//! server (`pods/portforward`, a websocket). The gateway's pool keeps each stream as a
//! keep-alive connection for many exchanges; a stream that breaks fails only the exchanges on
//! it. The pod a Job runs is remembered for a few seconds, so dialing does not list pods each
//! time.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use k8s_openapi::api::core::v1::Pod;
use kube::{Api, Client, ResourceExt};

use super::{pods, retry};
use crate::{
    gateway::{Dialer, GatewayError},
    http::Stream,
    tasks::Tasks,
};

/// How long a Job's pod and port are trusted without asking the API again. A pod does not
/// change under a Job (restartPolicy Never); a failed tunnel forgets it at once.
const TARGET_TTL: Duration = Duration::from_secs(10);

/// Why a stream to a pod could not be opened.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TunnelError {
    #[error("cannot find the server's pod: {0}")]
    FindPod(#[source] retry::ApiError),
    #[error("the port-forward request failed: {0}")]
    Request(#[source] retry::ApiError),
    #[error("port {0} was not forwarded")]
    NoStream(u16),
    #[error("the pod has no IP yet")]
    NoPodIp,
    #[error("cannot connect to the pod: {0}")]
    Connect(#[source] std::io::Error),
}

pub(crate) struct PodDialer {
    pods: Api<Pod>,
    tasks: Tasks,
    /// job → (pod, port, when it was looked up).
    targets: Mutex<HashMap<String, (String, u16, Instant)>>,
}

impl PodDialer {
    pub(crate) fn new(client: Client, namespace: &str, tasks: Tasks) -> PodDialer {
        PodDialer { pods: Api::namespaced(client, namespace), tasks, targets: Mutex::default() }
    }

    /// [`PodDialer::target`], remembered for [`TARGET_TTL`].
    async fn cached_target(&self, job: &str) -> Result<(String, u16), GatewayError> {
        let known = {
            let mut targets = self.targets.lock().expect("targets poisoned");
            targets.retain(|_, (_, _, at)| at.elapsed() < TARGET_TTL);
            targets.get(job).map(|(pod, port, _)| (pod.clone(), *port))
        };
        if let Some(target) = known {
            return Ok(target);
        }
        let (pod, port) = self.target(job).await?;
        self.targets.lock().expect("targets poisoned").insert(job.to_string(), (pod.clone(), port, Instant::now()));
        Ok((pod, port))
    }

    /// The running pod of `job` and the port its server listens on.
    async fn target(&self, job: &str) -> Result<(String, u16), GatewayError> {
        let pod = pods::find(&self.pods, job)
            .await
            .map_err(|e| GatewayError::Tunnel { job: job.to_string(), why: Box::new(TunnelError::FindPod(e)) })?
            .ok_or_else(|| GatewayError::NotFound(job.to_string()))?;
        if !pods::is_running(&pod) {
            return Err(GatewayError::NotRunning { job: job.to_string(), why: "its pod is not running".into() });
        }
        Ok((pod.name_any(), pods::server_port(&pod)))
    }
}

impl Dialer for PodDialer {
    fn dial<'a>(&'a self, job: &'a str) -> futures::future::BoxFuture<'a, Result<Box<dyn Stream>, GatewayError>> {
        Box::pin(async move {
            let (pod, port) = self.cached_target(job).await?;
            open(&self.pods, &pod, port, &self.tasks).await.map_err(|why| {
                self.targets.lock().expect("targets poisoned").remove(job);
                GatewayError::Tunnel { job: job.to_string(), why: Box::new(why) }
            })
        })
    }
}

/// A port-forward stream to `port` of `pod`.
pub(crate) async fn open(pods: &Api<Pod>, pod: &str, port: u16, tasks: &Tasks) -> Result<Box<dyn Stream>, TunnelError> {
    let mut forwarder = retry::once(pods.portforward(pod, &[port])).await.map_err(TunnelError::Request)?;
    let stream = forwarder.take_stream(port).ok_or(TunnelError::NoStream(port))?;
    let name = pod.to_string();
    // The forwarder's task ends when the stream is dropped.
    tasks.spawn(async move {
        if let Err(e) = forwarder.join().await {
            tracing::debug!(pod = %name, error = %e, "port-forward ended");
        }
    });
    Ok(Box::new(stream))
}
