//! A byte stream to a pod's port through the API server's `pods/portforward` (a websocket):
//! how this process reaches a pod from outside the cluster.

use k8s_openapi::api::core::v1::Pod;
use kube::Api;

use super::retry;
use crate::{http::Stream, tasks::Tasks};

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
