//! `GET /metrics`: the registry in the Prometheus text format. Who may read it is the guard's
//! business (the meta server's bearer token, a bridge's capability token), not this route's.

use axum::{
    Router,
    http::header,
    response::{IntoResponse, Response},
    routing::get,
};
use prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

use super::Metrics;

pub(super) fn router(metrics: Metrics) -> Router {
    Router::new().route("/metrics", get(move || scrape(metrics.clone())))
}

async fn scrape(metrics: Metrics) -> Response {
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], metrics.render()).into_response()
}
