//! The body of a client POST (streamable `/mcp` or SSE `/messages`): one JSON-RPC message or a
//! batch, checked and split into its messages without copying them, and the JSON-RPC error a face
//! answers with. It must not route or send anything: both faces hand the messages to the relay.

use axum::{
    body::Bytes,
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};
use serde_json::value::RawValue;

use super::envelope::Envelope;

/// The messages of one POST body: a single JSON-RPC message or a batch.
pub(crate) struct Batch<'a> {
    pub(crate) raw: Vec<&'a RawValue>,
    pub(crate) envelopes: Vec<Envelope<'a>>,
}

/// Why a body is not a JSON-RPC message or batch: the JSON-RPC error code and a sentence.
pub(crate) type BatchError = (i64, String);

pub(crate) fn parse_batch(body: &[u8]) -> Result<Batch<'_>, BatchError> {
    const PARSE_ERROR: i64 = -32700;
    const INVALID_REQUEST: i64 = -32600;
    let start = body.iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(body.len());
    let raw: Vec<&RawValue> = if body.get(start) == Some(&b'[') {
        serde_json::from_slice(body)
            .map_err(|e| (PARSE_ERROR, format!("Parse error: the body is not a JSON-RPC batch: {e}")))?
    } else {
        vec![
            serde_json::from_slice(body)
                .map_err(|e| (PARSE_ERROR, format!("Parse error: the body is not JSON: {e}")))?,
        ]
    };
    if raw.is_empty() {
        return Err((INVALID_REQUEST, "Invalid Request: the batch is empty".into()));
    }
    let envelopes = raw
        .iter()
        .map(|r| serde_json::from_str::<Envelope>(r.get()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| (INVALID_REQUEST, format!("Invalid Request: not a JSON-RPC message: {e}")))?;
    for (raw, env) in raw.iter().zip(&envelopes) {
        // An array would pass for a message (serde reads a struct from a sequence too).
        if !raw.get().starts_with('{') {
            return Err((
                INVALID_REQUEST,
                format!("Invalid Request: a message must be a JSON object, got {}", preview(raw.get())),
            ));
        }
        // Only a string or a finite number can be matched to its response: servers re-encode
        // ids their own way (and write an out-of-range number as `Infinity`).
        if let Some(id) = env.id
            && !valid_id(id.get())
        {
            return Err((
                INVALID_REQUEST,
                format!("Invalid Request: the id must be a string or a number, got {}", preview(id.get())),
            ));
        }
    }
    Ok(Batch { raw, envelopes })
}

fn valid_id(text: &str) -> bool {
    match text.as_bytes()[0] {
        b'"' => true,
        b'-' | b'0'..=b'9' => text.parse::<f64>().is_ok_and(f64::is_finite),
        _ => false,
    }
}

/// The start of a client's text, for an error message.
fn preview(text: &str) -> &str {
    let mut cut = text.len().min(64);
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    &text[..cut]
}

/// One message as a single line for a stdio server: the original bytes when they already are.
pub(crate) fn one_line(body: &Bytes, raw: &RawValue) -> Bytes {
    let text = raw.get();
    if text.contains(['\n', '\r']) {
        return match serde_json::from_str::<serde_json::Value>(text) {
            Ok(v) => Bytes::from(v.to_string()),
            Err(_) => Bytes::from(text.replace(['\n', '\r'], " ")),
        };
    }
    let offset = text.as_ptr() as usize - body.as_ptr() as usize;
    body.slice(offset..offset + text.len())
}

pub(crate) fn jsonrpc_error(status: StatusCode, id: Option<&RawValue>, code: i64, message: &str) -> Response {
    let id = id.and_then(|r| serde_json::from_str::<serde_json::Value>(r.get()).ok());
    let body = serde_json::json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}});
    (status, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}
