//! Capability URLs: each server's MCP door opens only under a random token that is a segment of
//! its URL (`…/<token>/mcp`), so knowing the URL is the permission to use it. Whoever was handed
//! the URL may call the server; a process that merely finds its port (any process on a laptop,
//! any pod that can reach the namespace) gets 404s.
//!
//! A token is 128 random bits in base64url (22 characters). It is compared in constant time,
//! never logged ([`Capability`]'s `Debug` hides it, [`redact`] hides it in a URL), and kept in
//! memory (local servers) or in the server's Secret (Kubernetes).

use axum::{
    Router,
    extract::Request,
    http::{StatusCode, Uri},
    response::{IntoResponse, Response},
};
use rand::RngExt;

/// Characters of a token (base64url without padding).
const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// Tokens shorter than this are refused (a `--token-env` value must be as strong as ours).
pub(crate) const MIN_LEN: usize = 22;

/// The paths that answer without a token: probes must not need a secret.
const OPEN: [&str; 2] = ["/healthz", "/readyz"];

/// A server's capability token.
#[derive(Clone, PartialEq, Eq)]
pub struct Capability(String);

/// Why a token given from outside (`--token-env`, a Secret) was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BadToken {
    #[error("the token has {0} characters; it needs at least {MIN_LEN}")]
    Short(usize),
    #[error("the token may hold only letters, digits, `-` and `_` (it is a URL path segment)")]
    Charset,
}

impl Capability {
    /// A fresh token from the thread's cryptographically secure generator.
    pub fn generate() -> Capability {
        let bytes: [u8; 16] = rand::rng().random();
        Capability(encode(&bytes))
    }

    /// A token given from outside, checked to be a strong, URL-safe path segment.
    pub fn parse(text: &str) -> Result<Capability, BadToken> {
        if text.len() < MIN_LEN {
            return Err(BadToken::Short(text.len()));
        }
        if !text.bytes().all(|b| ALPHABET.contains(&b)) {
            return Err(BadToken::Charset);
        }
        Ok(Capability(text.to_string()))
    }

    /// The token itself: only for URLs handed to the server's owner and for the Secret.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether `presented` is this token, in time independent of where they differ.
    pub fn matches(&self, presented: &str) -> bool {
        super::guard::constant_time_eq(presented.as_bytes(), self.0.as_bytes())
    }

    /// The part of `path` after `/<token>` when it starts with this token (`/` for the bare
    /// token), else `None`.
    pub fn strip<'a>(&self, path: &'a str) -> Option<&'a str> {
        let rest = path.strip_prefix('/')?;
        let (segment, rest) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        self.matches(segment).then_some(if rest.is_empty() { "/" } else { rest })
    }
}

impl std::fmt::Debug for Capability {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Capability(…)")
    }
}

/// base64url without padding.
fn encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

/// The segments that follow a token in every URL handed out.
const DOORS: [&str; 7] = ["messages", "message", "mcp", "sse", "status", "catalog", "metrics"];

/// `text` (a URL, or a message quoting one) with every token segment replaced by `…`, for logs
/// and error messages. A token segment is a run of at least 22 token characters after a `/`
/// and before `/mcp`, `/sse`, `/messages`, … — or ending the URL, when it cannot be a server
/// name (names are lowercase).
pub fn redact(text: &str) -> String {
    let bytes = text.as_bytes();
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b'-';
    let before_door = |rest: &str| {
        DOORS.iter().any(|d| {
            rest.strip_prefix('/')
                .and_then(|r| r.strip_prefix(d))
                .is_some_and(|after| after.bytes().next().is_none_or(|b| !word(b)))
        })
    };
    let mut out = String::with_capacity(text.len());
    let (mut copied, mut i) = (0, 0);
    while i < bytes.len() {
        if bytes[i] != b'/' {
            i += 1;
            continue;
        }
        let start = i + 1;
        let end = start + bytes[start..].iter().take_while(|b| ALPHABET.contains(b)).count();
        let run = &text[start..end];
        let ends_url = text[end..].bytes().next().is_none_or(|b| b != b'/');
        let not_a_name = run.bytes().any(|b| b.is_ascii_uppercase() || b == b'_');
        if run.len() >= MIN_LEN && (before_door(&text[end..]) || (ends_url && not_a_name)) {
            out.push_str(&text[copied..start]);
            out.push('…');
            copied = end;
        }
        i = end.max(i + 1);
    }
    out.push_str(&text[copied..]);
    out
}

/// What a door does with a request path.
#[derive(Debug, PartialEq, Eq)]
pub enum Admit<'a> {
    /// A probe path, answered without a token.
    Open,
    /// Under the right token (or no token is required): serve it as `path`.
    Inner(&'a str),
    /// Anything else: 404, as for a path that does not exist.
    Refused,
}

/// How a door with `token` (none: the door is open) treats `path`.
pub fn admit<'a>(token: Option<&Capability>, path: &'a str) -> Admit<'a> {
    if OPEN.contains(&path) {
        return Admit::Open;
    }
    match token {
        None => Admit::Inner(path),
        Some(t) => t.strip(path).map_or(Admit::Refused, Admit::Inner),
    }
}

/// `uri` with its path replaced by `path` (the query kept).
pub(crate) fn with_path(uri: &Uri, path: &str) -> Option<Uri> {
    let text = match uri.query() {
        Some(q) => format!("{path}?{q}"),
        None => path.to_string(),
    };
    text.parse().ok()
}

/// Serve `router` under `/<token>/…` (the probes stay at the top); any other path is a 404.
/// Without a token the router is served as it is. The path is rewritten before `router` routes
/// it (a `Router::layer` middleware would only see paths the router already matched).
pub fn guard(router: Router, token: Option<Capability>) -> Router {
    use tower::ServiceExt;
    let Some(token) = token else { return router };
    Router::new().fallback(move |mut req: Request| {
        let (router, token) = (router.clone(), token.clone());
        async move {
            let inner = match admit(Some(&token), req.uri().path()) {
                Admit::Refused => return refused(),
                Admit::Open => None,
                Admit::Inner(path) => Some(with_path(req.uri(), path)),
            };
            match inner {
                Some(None) => return refused(),
                Some(Some(uri)) => *req.uri_mut() = uri,
                None => {}
            }
            router.oneshot(req).await.into_response()
        }
    })
}

/// Refusals look like a missing path, so a guess learns nothing.
pub(crate) fn refused() -> Response {
    StatusCode::NOT_FOUND.into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_22_url_safe_characters_and_differ() {
        let (a, b) = (Capability::generate(), Capability::generate());
        assert_eq!(a.expose().len(), 22);
        assert!(a.expose().bytes().all(|c| ALPHABET.contains(&c)));
        assert_ne!(a, b);
        assert_eq!(Capability::parse(a.expose()).unwrap(), a);
        assert_eq!(format!("{a:?}"), "Capability(…)");
    }

    #[test]
    fn base64url_matches_the_rfc_examples() {
        assert_eq!(encode(b"f"), "Zg");
        assert_eq!(encode(b"fo"), "Zm8");
        assert_eq!(encode(b"foo"), "Zm9v");
        assert_eq!(encode(&[0xfb, 0xff]), "-_8");
    }

    #[test]
    fn outside_tokens_must_be_strong_and_url_safe() {
        assert_eq!(Capability::parse("short"), Err(BadToken::Short(5)));
        assert_eq!(Capability::parse("abcdefghijklmnopqrstu/w"), Err(BadToken::Charset));
    }

    #[test]
    fn only_the_right_token_opens_and_probes_stay_open() {
        let t = Capability::parse("AAAAAAAAAAAAAAAAAAAAAA").unwrap();
        assert_eq!(admit(Some(&t), "/AAAAAAAAAAAAAAAAAAAAAA/mcp"), Admit::Inner("/mcp"));
        assert_eq!(admit(Some(&t), "/AAAAAAAAAAAAAAAAAAAAAA/messages"), Admit::Inner("/messages"));
        assert_eq!(admit(Some(&t), "/AAAAAAAAAAAAAAAAAAAAAA"), Admit::Inner("/"));
        assert_eq!(admit(Some(&t), "/AAAAAAAAAAAAAAAAAAAAAB/mcp"), Admit::Refused);
        assert_eq!(admit(Some(&t), "/mcp"), Admit::Refused);
        assert_eq!(admit(Some(&t), "/AAAAAAAAAAAAAAAAAAAAA/mcp"), Admit::Refused);
        assert_eq!(admit(Some(&t), "/readyz"), Admit::Open);
        assert_eq!(admit(None, "/mcp"), Admit::Inner("/mcp"));
    }

    #[tokio::test]
    async fn a_guarded_router_answers_under_its_token_only() {
        use axum::{body::Body, routing::get};
        use tower::ServiceExt;
        let t = Capability::generate();
        let inner = Router::new()
            .route("/mcp", get(|uri: Uri| async move { uri.to_string() }))
            .route("/healthz", get(|| async { "ok" }));
        let app = guard(inner, Some(t.clone()));
        let status = |path: String| {
            let app = app.clone();
            async move {
                let resp = app.oneshot(Request::get(path).body(Body::empty()).unwrap()).await.unwrap();
                let code = resp.status();
                let body = axum::body::to_bytes(resp.into_body(), 1024).await.unwrap();
                (code.as_u16(), String::from_utf8_lossy(&body).to_string())
            }
        };
        assert_eq!(status(format!("/{}/mcp?x=1", t.expose())).await, (200, "/mcp?x=1".into()));
        assert_eq!(status("/mcp".into()).await.0, 404);
        assert_eq!(status(format!("/{}/mcp", Capability::generate().expose())).await.0, 404);
        assert_eq!(status("/healthz".into()).await, (200, "ok".into()));
    }

    #[test]
    fn redaction_hides_tokens_but_not_names() {
        let t = Capability::generate();
        let url = format!("http://127.0.0.1:9/servers/mcp-server-time-ab12cd34/{}/mcp", t.expose());
        let shown = redact(&url);
        assert!(!shown.contains(t.expose()), "{shown}");
        assert_eq!(shown, "http://127.0.0.1:9/servers/mcp-server-time-ab12cd34/…/mcp");
        assert_eq!(
            redact(&format!("http://h:1/{}/messages?sessionId=1", t.expose())),
            "http://h:1/…/messages?sessionId=1"
        );
        assert_eq!(redact("/AbcdefghijklmnopqrstuV"), "/…");
        assert_eq!(redact("http://h:1/mcp"), "http://h:1/mcp");
        let quoted = format!("cannot connect at http://h:1/{}/mcp: refused", t.expose());
        assert_eq!(redact(&quoted), "cannot connect at http://h:1/…/mcp: refused");
        let name = "/servers/mcp-server-everything-ab12cd34";
        assert_eq!(redact(name), name, "a long server name is not a token");
    }
}
