//! The gateway's families: its requests by status class, how long each took to its response
//! head (an SSE stream counts until its first byte, not its end), and the tunnels open to
//! servers' bridges.

use std::time::Instant;

use axum::{
    extract::{Request, State},
    middleware::Next,
    response::Response,
};
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::{Registry, Unit},
};

use super::{Metrics, label_values};

label_values! {
    /// The class of an HTTP status.
    pub(crate) enum StatusClass {
        Informational => "1xx",
        Success => "2xx",
        Redirection => "3xx",
        ClientError => "4xx",
        ServerError => "5xx",
    }
}

impl StatusClass {
    fn of(status: axum::http::StatusCode) -> StatusClass {
        match status.as_u16() {
            ..200 => StatusClass::Informational,
            200..300 => StatusClass::Success,
            300..400 => StatusClass::Redirection,
            400..500 => StatusClass::ClientError,
            _ => StatusClass::ServerError,
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabels {
    status: StatusClass,
}

/// From a pooled exchange (a millisecond) to a wake that starts a server (seconds).
const LATENCY_BUCKETS: [f64; 14] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

/// See the module docs. Cloning shares the families.
#[derive(Debug, Clone)]
pub(crate) struct GatewayMetrics {
    requests: Family<StatusLabels, Counter>,
    latency: Histogram,
    tunnels: Gauge,
}

impl Default for GatewayMetrics {
    fn default() -> Self {
        let requests = Family::<StatusLabels, Counter>::default();
        for &status in StatusClass::ALL {
            let _ = requests.get_or_create(&StatusLabels { status });
        }
        GatewayMetrics { requests, latency: Histogram::new(LATENCY_BUCKETS), tunnels: Gauge::default() }
    }
}

impl GatewayMetrics {
    pub(super) fn register(&self, r: &mut Registry) {
        r.register(
            "gateway_requests",
            "Requests through the gateway (/servers/...) by status class",
            self.requests.clone(),
        );
        r.register_with_unit(
            "gateway_request",
            "Time from a gateway request to its response head (waking a stopped server included)",
            Unit::Seconds,
            self.latency.clone(),
        );
        r.register(
            "gateway_tunnels",
            "Connections open from the gateway's pool to servers' bridges",
            self.tunnels.clone(),
        );
    }

    /// The number of open tunnels (read from the pool before a scrape).
    pub(crate) fn set_tunnels(&self, open: i64) {
        self.tunnels.set(open);
    }
}

impl Metrics {
    /// `router` (the gateway's routes) with every request counted and timed.
    pub(crate) fn track_gateway(&self, router: axum::Router) -> axum::Router {
        router.layer(axum::middleware::from_fn_with_state(self.clone(), track))
    }
}

/// Middleware of the gateway's routes: counts each request by the class of its status, and
/// times it to its response head.
async fn track(State(metrics): State<Metrics>, request: Request, next: Next) -> Response {
    let began = Instant::now();
    let response = next.run(request).await;
    let gateway = metrics.gateway();
    gateway.latency.observe(began.elapsed().as_secs_f64());
    gateway.requests.get_or_create(&StatusLabels { status: StatusClass::of(response.status()) }).inc();
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_fall_into_their_class() {
        use axum::http::StatusCode;
        assert_eq!(StatusClass::of(StatusCode::OK), StatusClass::Success);
        assert_eq!(StatusClass::of(StatusCode::ACCEPTED), StatusClass::Success);
        assert_eq!(StatusClass::of(StatusCode::NOT_FOUND), StatusClass::ClientError);
        assert_eq!(StatusClass::of(StatusCode::BAD_GATEWAY), StatusClass::ServerError);
        assert_eq!(StatusClass::of(StatusCode::SWITCHING_PROTOCOLS), StatusClass::Informational);
    }
}
