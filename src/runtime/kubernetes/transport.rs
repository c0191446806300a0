//! The kube client's HTTP stack, built here rather than by `Client::try_from(config)` for one
//! reason: kube's connector leaves Nagle's algorithm on. A port-forward tunnel sends each write
//! as a small websocket frame, and with Nagle on, a request's second frame waits for the API
//! server's delayed ACK of the first: ~40 ms on a p99 of tunnelled calls, a third of the
//! gateway's calls/s on the fake API server. The layers are kube's own (base URI, auth with
//! token refresh, extra headers, retry of 429/503/504), in kube's order.

use std::time::Duration;

use hyper_util::{
    client::legacy::{Client as HyperClient, connect::HttpConnector},
    rt::TokioExecutor,
};
use kube::{
    Client, Config,
    client::{Body, ClientBuilder, ConfigExt, retry::RetryPolicy},
};
use tower::{BoxError, ServiceBuilder, retry::RetryLayer};

/// How long an idle connection to the API server goes before the kernel checks it is alive: a
/// watch on a connection that died silently would otherwise wait forever.
const KEEPALIVE: Duration = Duration::from_secs(30);

/// A client for `config` whose connections to the API server send small writes at once. A
/// config with a proxy (kube's builder says what is not supported) or with an exec credential
/// plugin (kube tracks when the certificate it hands out expires) goes through kube's own
/// builder.
pub(crate) fn client(config: Config) -> Result<Client, kube::Error> {
    if config.proxy_url.is_some() || config.auth_info.exec.is_some() {
        return Client::try_from(config);
    }
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(config.connect_timeout);
    http.set_keepalive(Some(KEEPALIVE));
    let https = config.rustls_https_connector_with_connector(http)?;
    let hyper: HyperClient<_, Body> = HyperClient::builder(TokioExecutor::new()).build(https);
    let service = ServiceBuilder::new()
        .layer(config.base_uri_layer())
        .option_layer(config.default_retry.then(|| RetryLayer::new(RetryPolicy::server_retry())))
        .option_layer(config.auth_layer()?)
        .layer(config.extra_headers_layer()?)
        .map_err(BoxError::from)
        .service(hyper);
    Ok(ClientBuilder::new(service, config.default_namespace.clone()).build())
}
