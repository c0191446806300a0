//! HTTP front-door checks shared by the meta server and the bridge: a `Host` allow-list
//! (DNS-rebinding protection for servers on loopback) and an optional bearer token compared in
//! constant time. `/healthz` and `/readyz` stay open so probes need no secret.

use std::sync::Arc;

use axum::{
    Router,
    extract::{Request, State},
    http::{StatusCode, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
};

/// What a listener lets in.
#[derive(Debug, Clone, Default)]
pub(crate) struct Guard {
    /// Accepted `Host` names (without port); `None` accepts any.
    pub(crate) allowed_hosts: Option<Vec<String>>,
    /// Required `Authorization: Bearer` token; `None` means no authentication.
    pub(crate) token: Option<String>,
}

impl Guard {
    /// Hosts that always name this machine.
    pub(crate) fn loopback_hosts() -> Vec<String> {
        ["localhost", "127.0.0.1", "::1", "[::1]"].map(String::from).to_vec()
    }

    /// Wrap `router` with the checks.
    pub(crate) fn apply(self, router: Router) -> Router {
        router.layer(middleware::from_fn_with_state(Arc::new(self), check))
    }
}

async fn check(State(guard): State<Arc<Guard>>, request: Request, next: Next) -> Response {
    let path = request.uri().path();
    if path == "/healthz" || path == "/readyz" {
        return next.run(request).await;
    }
    if let Some(allowed) = &guard.allowed_hosts {
        let host = request
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| request.uri().host())
            .unwrap_or("");
        if !host_allowed(host, allowed) {
            return (StatusCode::FORBIDDEN, format!("Host `{host}` is not allowed (see --allowed-host)"))
                .into_response();
        }
    }
    if let Some(token) = &guard.token {
        let presented = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|h| h.to_str().ok())
            .and_then(|h| h.strip_prefix("Bearer ").or_else(|| h.strip_prefix("bearer ")))
            .unwrap_or("");
        if !constant_time_eq(presented.as_bytes(), token.as_bytes()) {
            return (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer")],
                "missing or wrong bearer token (Authorization: Bearer <token>)",
            )
                .into_response();
        }
    }
    next.run(request).await
}

/// `host` is `name` or `name:port`, with IPv6 in brackets.
fn host_allowed(host: &str, allowed: &[String]) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().map(|h| format!("[{h}]")).unwrap_or_default()
    } else {
        host.rsplit_once(':').map(|(h, _)| h).unwrap_or(host).to_string()
    };
    allowed.iter().any(|a| a.eq_ignore_ascii_case(&name) || a.eq_ignore_ascii_case(host))
}

/// Compare without leaking, through timing, how much of the token matched.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = (a.len() ^ b.len()) as u8 | ((a.len() ^ b.len()) >> 8) as u8;
    for (i, byte) in b.iter().enumerate() {
        diff |= a.get(i).copied().unwrap_or(0xff) ^ byte;
    }
    diff == 0 && a.len() == b.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_match_with_and_without_port() {
        let allowed = Guard::loopback_hosts();
        assert!(host_allowed("127.0.0.1:8000", &allowed));
        assert!(host_allowed("localhost", &allowed));
        assert!(host_allowed("[::1]:9000", &allowed));
        assert!(!host_allowed("evil.example:8000", &allowed));
        assert!(!host_allowed("127.0.0.1.evil.example", &allowed));
    }

    #[test]
    fn tokens_compare_exactly() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secre", b"secret"));
        assert!(!constant_time_eq(b"secret!", b"secret"));
        assert!(!constant_time_eq(b"", b"secret"));
    }
}
