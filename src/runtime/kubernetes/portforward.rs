//! Reaching a server's pod from outside the cluster: a [`Dialer`] for the gateway that finds
//! the Job's running pod and opens a port-forward stream to its MCP port through the API
//! server (`pods/portforward`, a websocket). One stream per HTTP exchange keeps it simple: a
//! stream that breaks affects one request only. The pod a Job runs is remembered for a few
//! seconds, so a session's requests do not each list pods first.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use k8s_openapi::api::core::v1::Pod;
use kube::{Api, Client, ResourceExt, api::ListParams};

use super::{manifests, retry};
use crate::gateway::{Dialer, GatewayError, Stream};

/// How long a Job's pod and port are trusted without asking the API again. A pod does not
/// change under a Job (restartPolicy Never); a failed tunnel forgets it at once.
const TARGET_TTL: Duration = Duration::from_secs(10);

pub struct PodDialer {
    pods: Api<Pod>,
    /// job → (pod, port, when it was looked up).
    targets: Mutex<HashMap<String, (String, u16, Instant)>>,
}

impl PodDialer {
    pub fn new(client: Client, namespace: &str) -> PodDialer {
        PodDialer { pods: Api::namespaced(client, namespace), targets: Mutex::default() }
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
        let params = ListParams::default().labels(&manifests::selector_query(job));
        let pods = retry::call("list pods", || self.pods.list(&params))
            .await
            .map_err(|e| GatewayError::Tunnel { job: job.to_string(), why: e.to_string() })?
            .items;
        if pods.is_empty() {
            return Err(GatewayError::NotFound(job.to_string()));
        }
        let pod = pods
            .into_iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .find(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
            .ok_or_else(|| GatewayError::NotRunning { job: job.to_string(), why: "its pod is not running".into() })?;
        let port = pod
            .spec
            .as_ref()
            .and_then(|s| s.containers.iter().find(|c| c.name == manifests::CONTAINER))
            .and_then(|c| c.ports.as_ref()?.first())
            .map(|p| p.container_port as u16)
            .unwrap_or(manifests::SERVER_PORT);
        Ok((pod.name_any(), port))
    }
}

impl Dialer for PodDialer {
    fn dial<'a>(&'a self, job: &'a str) -> futures::future::BoxFuture<'a, Result<Box<dyn Stream>, GatewayError>> {
        Box::pin(async move {
            let (pod, port) = self.cached_target(job).await?;
            open(&self.pods, &pod, port).await.map_err(|why| {
                self.targets.lock().expect("targets poisoned").remove(job);
                GatewayError::Tunnel { job: job.to_string(), why }
            })
        })
    }
}

/// A port-forward stream to `port` of `pod`.
pub async fn open(pods: &Api<Pod>, pod: &str, port: u16) -> Result<Box<dyn Stream>, String> {
    let mut forwarder = retry::once(pods.portforward(pod, &[port])).await.map_err(|e| e.to_string())?;
    let stream = forwarder.take_stream(port).ok_or_else(|| format!("port {port} was not forwarded"))?;
    let name = pod.to_string();
    // The forwarder's task ends when the stream is dropped.
    tokio::spawn(async move {
        if let Err(e) = forwarder.join().await {
            tracing::debug!(pod = %name, error = %e, "port-forward ended");
        }
    });
    Ok(Box::new(stream))
}
