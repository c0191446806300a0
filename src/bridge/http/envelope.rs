//! JSON-RPC envelopes: the few members of a message the router reads (`id`, `method`, progress
//! tokens), parsed leniently over the borrowed bytes, and [`id_key`], the canonical routing key of
//! an id. It must not build, change or forward messages: the relay passes on the peer's bytes.

use std::borrow::Cow;

use serde::{
    Deserialize,
    de::{DeserializeSeed, IgnoredAny},
};
use serde_json::value::RawValue;

/// The parts of a JSON-RPC message the router needs.
#[derive(Deserialize)]
pub(crate) struct Envelope<'a> {
    #[serde(borrow, default)]
    pub(crate) id: Option<&'a RawValue>,
    #[serde(default)]
    pub(crate) method: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    pub(crate) params: Option<EnvelopeParams<'a>>,
}

/// What the router reads of `params`. Any JSON is accepted (JSON-RPC also allows by-position
/// `params`, and the bridge forwards whatever the server understands); only an object's
/// progress tokens are kept.
#[derive(Default)]
pub(crate) struct EnvelopeParams<'a> {
    /// Set on `notifications/progress` from the server.
    pub(crate) progress_token: Option<&'a RawValue>,
    /// Requests from the client carry their token in `_meta.progressToken`.
    pub(crate) meta: Option<EnvelopeMeta<'a>>,
}

#[derive(Default)]
pub(crate) struct EnvelopeMeta<'a> {
    pub(crate) progress_token: Option<&'a RawValue>,
}

/// Reads the `progressToken` and (when `meta_too`) `_meta` members of an object; any other
/// JSON value reads as neither.
struct Lenient<'a> {
    progress_token: Option<&'a RawValue>,
    meta: Option<EnvelopeMeta<'a>>,
}

struct LenientVisitor {
    meta_too: bool,
}

impl<'de> serde::de::Visitor<'de> for LenientVisitor {
    type Value = Lenient<'de>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut out = Lenient { progress_token: None, meta: None };
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            match &*key {
                "progressToken" => out.progress_token = map.next_value()?,
                "_meta" if self.meta_too => {
                    let meta = map.next_value_seed(LenientSeed { meta_too: false })?;
                    out.meta = Some(EnvelopeMeta { progress_token: meta.progress_token });
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(out)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Lenient { progress_token: None, meta: None })
    }

    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Lenient { progress_token: None, meta: None })
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(Lenient { progress_token: None, meta: None })
    }
    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(Lenient { progress_token: None, meta: None })
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(Lenient { progress_token: None, meta: None })
    }
    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(Lenient { progress_token: None, meta: None })
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Lenient { progress_token: None, meta: None })
    }
}

struct LenientSeed {
    meta_too: bool,
}

impl<'de> serde::de::DeserializeSeed<'de> for LenientSeed {
    type Value = Lenient<'de>;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(LenientVisitor { meta_too: self.meta_too })
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for EnvelopeParams<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let l = LenientSeed { meta_too: true }.deserialize(d)?;
        Ok(EnvelopeParams { progress_token: l.progress_token, meta: l.meta })
    }
}

impl Envelope<'_> {
    pub(crate) fn is_request(&self) -> bool {
        self.id.is_some() && self.method.is_some()
    }
    pub(crate) fn is_response(&self) -> bool {
        self.id.is_some() && self.method.is_none()
    }
    /// The id as the router keys it (see [`id_key`]); empty when there is none.
    pub(crate) fn id_key(&self) -> Cow<'_, str> {
        self.id.map(id_key).unwrap_or_default()
    }
    pub(crate) fn request_progress_token(&self) -> Option<&RawValue> {
        self.params.as_ref()?.meta.as_ref()?.progress_token
    }
}

/// The routing key of a JSON-RPC id (or progress token): its JSON text, in one canonical
/// spelling. Servers re-encode the ids they answer, and not always the same way: Python's
/// `json` writes `"é"` as `"\u00e9"` and `1e2` as `100.0`, so a response must match however
/// its id is spelled. Plain ASCII strings and integers (nearly every id) are used as they are.
pub(crate) fn id_key(raw: &RawValue) -> Cow<'_, str> {
    let text = raw.get();
    match text.as_bytes().first() {
        Some(b'"') if text.contains('\\') || !text.is_ascii() => match serde_json::from_str::<String>(text) {
            Ok(s) => Cow::Owned(serde_json::Value::String(s).to_string()),
            Err(_) => Cow::Borrowed(text),
        },
        Some(b'-' | b'0'..=b'9') => number_key(text),
        _ => Cow::Borrowed(text),
    }
}

fn number_key(text: &str) -> Cow<'_, str> {
    let digits = text.strip_prefix('-').unwrap_or(text);
    if digits.bytes().all(|b| b.is_ascii_digit()) {
        // An integer: kept exactly (it may not fit an f64), except that -0 is 0.
        return if digits.bytes().all(|b| b == b'0') { Cow::Borrowed("0") } else { Cow::Borrowed(text) };
    }
    match text.parse::<f64>() {
        // 2^53: integral values below it are exact, and a server may write 1.0e2, 100.0 or 100.
        Ok(x) if x.is_finite() && x.fract() == 0.0 && x.abs() < 9_007_199_254_740_992.0 => {
            Cow::Owned((x as i64).to_string())
        }
        Ok(x) if x.is_finite() => Cow::Owned(x.to_string()),
        _ => Cow::Borrowed(text),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_accept_any_params() {
        for text in [
            r#"{"jsonrpc":"2.0","id":1,"method":"sum","params":[1,2]}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"x","params":{"_meta":"not an object"}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"x","params":null}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"x","params":"s"}"#,
        ] {
            let env: Envelope = serde_json::from_str(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert!(env.is_request() && env.request_progress_token().is_none(), "{text}");
        }
        let text = r#"{"id":1,"method":"x","params":{"a":[{}],"_meta":{"x":1,"progressToken":"t"}}}"#;
        let env: Envelope = serde_json::from_str(text).unwrap();
        assert_eq!(env.request_progress_token().map(RawValue::get), Some(r#""t""#));
        let text = r#"{"method":"notifications/progress","params":{"progressToken":7,"progress":1}}"#;
        let env: Envelope = serde_json::from_str(text).unwrap();
        assert_eq!(env.params.unwrap().progress_token.map(RawValue::get), Some("7"));
        assert!(serde_json::from_str::<Envelope>(r#"{"id":1,"method":5}"#).is_err());
    }
}
