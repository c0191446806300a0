//! Property tests of what parses untrusted input: the bridge's POST bodies (streamable `/mcp`,
//! legacy SSE `/messages`), `create_mcp_server` arguments, preset files and server names.
//!
//! They stand in for fuzzing: cargo-fuzz needs a nightly toolchain, which the machine these were
//! written on cannot fetch, so proptest (stable) generates the inputs instead. The default case
//! count (256 per property) keeps the file well under 20 s in a debug build; for a long run:
//!
//! ```sh
//! PROPTEST_CASES=20000 cargo test --test integration properties
//! ```
//!
//! The bridge properties post to a live in-process bridge (the library's [`Bridge`] on a real
//! listener) in front of `tests/fixtures/faulty_server.py ok`, a Python server that answers
//! every request, so a request that gets no response shows up as a hang (each POST has a limit).

use std::{
    collections::{BTreeMap, HashSet},
    path::PathBuf,
    sync::{
        OnceLock,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use futures::StreamExt;
use mcp_ephemeral::{
    bridge::{Bridge, BridgeConfig, ChildCommand, Readiness},
    names,
    presets::{self, Presets},
    runtime::{Capabilities, RuntimeKind},
    servers::{CreateRequest, Policy, resolve},
    spec::{self, Source},
    tasks::Tasks,
};
use proptest::{
    prelude::*,
    test_runner::{Config, TestCaseError, TestRunner},
};
use serde_json::{Map, Value, json};

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/faulty_server.py");
/// Limit for one HTTP exchange: a request that never gets its response fails the property.
const POST_LIMIT: Duration = Duration::from_secs(10);

/// Panics on the live bridge's runtime threads (its tasks and handlers).
static PANICS: AtomicUsize = AtomicUsize::new(0);
const RUNTIME_THREAD: &str = "live-bridge";

/// One runtime, bridge and preset set for every property of this file.
struct Live {
    rt: tokio::runtime::Runtime,
    base: String,
    bridge: Bridge,
    presets: Presets,
}

fn live() -> &'static Live {
    static LIVE: OnceLock<Live> = OnceLock::new();
    LIVE.get_or_init(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if std::thread::current().name() == Some(RUNTIME_THREAD) {
                PANICS.fetch_add(1, Ordering::Relaxed);
            }
            previous(info);
        }));
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name(RUNTIME_THREAD)
            .enable_all()
            .build()
            .unwrap();
        let (bridge, base) = rt.block_on(async {
            let command = ChildCommand::new(vec!["python3".into(), FIXTURE.into(), "ok".into()], Vec::new());
            let mut cfg = BridgeConfig::new(command);
            cfg.init_timeout = Duration::from_secs(20);
            let bridge = Bridge::start(cfg, &Tasks::new());
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let base = format!("http://{}", listener.local_addr().unwrap());
            tokio::spawn(axum::serve(listener, bridge.router()).into_future());
            let ready = bridge.wait_ready(Duration::from_secs(30)).await;
            assert!(matches!(ready, Readiness::Ready(_)), "the fixture did not start: {ready:?}");
            (bridge, base)
        });
        Live { rt, base, bridge, presets: Presets::load(None).unwrap() }
    })
}

fn config() -> Config {
    // Config::default() reads PROPTEST_CASES.
    Config { failure_persistence: None, ..Config::default() }
}

fn no_panics() -> Result<(), TestCaseError> {
    prop_assert_eq!(PANICS.load(Ordering::Relaxed), 0, "the bridge panicked (see the output above)");
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Inputs.

/// Any JSON value, a few levels deep.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        any::<String>().prop_map(Value::from),
        "[a-z_/]{0,10}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-zA-Z_]{0,8}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A JSON-RPC message, or something close to one: any id, method, params and extra members.
fn message() -> impl Strategy<Value = Value> {
    let id = prop_oneof![
        3 => any::<i64>().prop_map(|i| Some(json!(i))),
        3 => any::<String>().prop_map(|s| Some(json!(s))),
        1 => any::<f64>().prop_map(|f| Some(json!(f))),
        1 => Just(None),
        1 => Just(Some(Value::Null)),
        1 => json_value().prop_map(Some),
    ];
    let method = prop_oneof![
        2 => Just(None),
        3 => prop::sample::select(vec!["ping", "tools/list", "tools/call", "initialize", "notifications/cancelled"])
            .prop_map(|m| Some(json!(m))),
        2 => "[a-z/_]{0,16}".prop_map(|m| Some(json!(m))),
        1 => any::<String>().prop_map(|m| Some(json!(m))),
        1 => json_value().prop_map(Some),
    ];
    let params = prop_oneof![
        2 => Just(None),
        2 => any::<String>().prop_map(|m| Some(json!({"name": "echo", "arguments": {"message": m}}))),
        1 => any::<String>().prop_map(|t| Some(json!({"_meta": {"progressToken": t}}))),
        2 => json_value().prop_map(Some),
    ];
    let extra = prop::collection::btree_map("[a-z]{1,6}", json_value(), 0..2);
    (id, method, params, extra, any::<bool>()).prop_map(|(id, method, params, extra, jsonrpc)| {
        let mut m: Map<String, Value> = extra.into_iter().collect();
        if jsonrpc {
            m.insert("jsonrpc".into(), json!("2.0"));
        }
        for (k, v) in [("id", id), ("method", method), ("params", params)] {
            match v {
                Some(v) => m.insert(k.into(), v),
                None => m.remove(k),
            };
        }
        Value::Object(m)
    })
}

/// A body: one message or a batch (sometimes with a stray non-object).
fn message_body() -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => message(),
        2 => prop::collection::vec(message(), 0..4).prop_map(Value::Array),
        1 => prop::collection::vec(prop_oneof![message(), json_value()], 1..3).prop_map(Value::Array),
        1 => json_value(),
    ]
}

/// Bytes: random, JSON-ish, or a JSON-RPC body with one byte cut, added or changed.
fn body_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..300),
        r#"[\[\]{}",:0-9a-z\\ .eE+-]{0,80}"#.prop_map(String::into_bytes),
        message_body().prop_map(|v| v.to_string().into_bytes()),
        (message_body(), any::<prop::sample::Index>(), any::<u8>(), 0..3u8).prop_map(|(v, at, byte, how)| {
            let mut b = v.to_string().into_bytes();
            let i = at.index(b.len() + 1);
            match how {
                0 => b.truncate(i),
                1 => b.insert(i, byte),
                _ if i < b.len() => b[i] = byte,
                _ => b.push(byte),
            }
            b
        }),
    ]
}

// ---------------------------------------------------------------------------------------------
// What the bridge must do with a body.

#[derive(Debug, PartialEq)]
enum Expect {
    /// 400 with a JSON-RPC error.
    Invalid,
    /// 202: notifications or responses only.
    Accepted,
    /// 200, with a response for each of these ids.
    Answered(Vec<Value>),
}

/// The verdict on a body of valid JSON, as JSON-RPC and MCP define it.
fn expect(body: &Value) -> Expect {
    let messages: Vec<&Value> = match body {
        Value::Array(items) if items.is_empty() => return Expect::Invalid,
        Value::Array(items) => items.iter().collect(),
        single => vec![single],
    };
    let mut ids = Vec::new();
    for m in messages {
        let Some(obj) = m.as_object() else { return Expect::Invalid };
        let method = match obj.get("method") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s),
            Some(_) => return Expect::Invalid,
        };
        let id = match obj.get("id") {
            None | Some(Value::Null) => None,
            Some(id @ (Value::String(_) | Value::Number(_))) => Some(id),
            Some(_) => return Expect::Invalid,
        };
        if let (Some(id), Some(_)) = (id, method) {
            ids.push(id.clone());
        }
    }
    if ids.is_empty() { Expect::Accepted } else { Expect::Answered(ids) }
}

/// Whether two ids are the same: numbers by value (a server may write 1e2 as 100.0; and
/// serde_json, without its `float_roundtrip` feature, may read a float one ulp off).
fn same_id(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64()) {
            (Some(x), Some(y)) => x == y,
            _ => {
                let (x, y) = (x.as_f64().unwrap_or(f64::NAN), y.as_f64().unwrap_or(f64::NAN));
                x == y || (x - y).abs() <= x.abs().max(y.abs()) * 1e-15
            }
        },
        _ => a == b,
    }
}

struct Reply {
    status: u16,
    session: Option<String>,
    json: bool,
    text: String,
}

async fn post(url: &str, session: Option<&str>, accept: &str, body: Vec<u8>) -> Result<Reply, TestCaseError> {
    let http = http();
    let mut req = http.post(url).header("content-type", "application/json").header("accept", accept).body(body);
    if let Some(s) = session {
        req = req.header("mcp-session-id", s);
    }
    let exchange = async {
        let r = req.send().await?;
        let status = r.status().as_u16();
        let session = r.headers().get("mcp-session-id").and_then(|v| v.to_str().ok()).map(str::to_owned);
        let json = r.headers().get("content-type").is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
        Ok::<_, reqwest::Error>(Reply { status, session, json, text: r.text().await? })
    };
    match tokio::time::timeout(POST_LIMIT, exchange).await {
        Err(_) => Err(TestCaseError::fail(format!("POST {url} got no complete answer within {POST_LIMIT:?}"))),
        Ok(Err(e)) => Err(TestCaseError::fail(format!("POST {url}: {e}"))),
        Ok(Ok(r)) => Ok(r),
    }
}

fn http() -> reqwest::Client {
    static HTTP: OnceLock<reqwest::Client> = OnceLock::new();
    HTTP.get_or_init(reqwest::Client::new).clone()
}

/// The JSON messages of a reply: an SSE stream's events, or a JSON body.
fn messages(reply: &Reply) -> Result<Vec<Value>, TestCaseError> {
    if reply.json {
        let v: Value = serde_json::from_str(&reply.text)
            .map_err(|e| TestCaseError::fail(format!("reply is not JSON ({e}): {:.300}", reply.text)))?;
        return Ok(match v {
            Value::Array(items) => items,
            v => vec![v],
        });
    }
    let mut out = Vec::new();
    for event in reply.text.split("\n\n") {
        let data: Vec<&str> = event.lines().filter_map(|l| l.strip_prefix("data:")).map(|d| d.trim_start()).collect();
        if data.is_empty() {
            continue;
        }
        let data = data.join("\n");
        out.push(
            serde_json::from_str(&data)
                .map_err(|e| TestCaseError::fail(format!("an SSE event is not JSON ({e}): {data:.300}")))?,
        );
    }
    Ok(out)
}

/// A 4xx reply must be a JSON-RPC error with a code and a message.
fn check_jsonrpc_error(reply: &Reply) -> Result<i64, TestCaseError> {
    let v: Value = serde_json::from_str(&reply.text).map_err(|e| {
        TestCaseError::fail(format!("{} is not a JSON-RPC error ({e}): {:.300}", reply.status, reply.text))
    })?;
    prop_assert_eq!(&v["jsonrpc"], "2.0");
    prop_assert!(v["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{}", v);
    v["error"]["code"].as_i64().ok_or_else(|| TestCaseError::fail(format!("no error code: {v}")))
}

/// Initialize a streamable HTTP session on the live bridge.
async fn open_session(base: &str) -> String {
    let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "props", "version": "0"}}});
    let reply =
        post(&format!("{base}/mcp"), None, "application/json, text/event-stream", init.to_string().into_bytes())
            .await
            .unwrap();
    assert_eq!(reply.status, 200, "{}", reply.text);
    reply.session.expect("mcp-session-id")
}

async fn close_session(base: &str, session: &str) {
    let r = http().delete(format!("{base}/mcp")).header("mcp-session-id", session).send().await.unwrap();
    assert_eq!(r.status(), 200);
}

/// The bridge still serves: healthz, and a new session answers a call.
async fn still_serves(live: &Live) {
    assert!(matches!(live.bridge.readiness(), Readiness::Ready(_)));
    let r = http().get(format!("{}/healthz", live.base)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let session = open_session(&live.base).await;
    let call = json!({"jsonrpc": "2.0", "id": "last", "method": "tools/call", "params": {"name": "echo", "arguments": {"message": "still here"}}});
    let reply = post(
        &format!("{}/mcp", live.base),
        Some(&session),
        "application/json, text/event-stream",
        call.to_string().into_bytes(),
    )
    .await
    .unwrap();
    assert!(reply.text.contains("still here"), "{}", reply.text);
    close_session(&live.base, &session).await;
}

// ---------------------------------------------------------------------------------------------
// The bridge.

#[test]
fn streamable_post_bodies_get_a_verdict_and_every_request_its_answer() {
    let live = live();
    let url = format!("{}/mcp", live.base);
    let session = live.rt.block_on(open_session(&live.base));
    let mut runner = TestRunner::new(config());
    let result = runner.run(&(message_body(), any::<bool>()), |(body, sse)| {
        live.rt.block_on(async {
            let accept = if sse { "application/json, text/event-stream" } else { "application/json" };
            let reply = post(&url, Some(&session), accept, body.to_string().into_bytes()).await?;
            match expect(&body) {
                Expect::Invalid => {
                    prop_assert_eq!(reply.status, 400, "{}", reply.text);
                    prop_assert_eq!(check_jsonrpc_error(&reply)?, -32600);
                }
                Expect::Accepted => prop_assert_eq!(reply.status, 202, "{}", reply.text),
                Expect::Answered(ids) => {
                    prop_assert_eq!(reply.status, 200, "{}", reply.text);
                    let got = messages(&reply)?;
                    for id in ids {
                        prop_assert!(
                            got.iter().any(|m| m.get("method").is_none() && same_id(&m["id"], &id)),
                            "no response for id {} in {:?}",
                            id,
                            got
                        );
                    }
                }
            }
            no_panics()
        })
    });
    result.unwrap();
    live.rt.block_on(async {
        close_session(&live.base, &session).await;
        still_serves(live).await;
    });
}

#[test]
fn streamable_post_bytes_never_break_the_bridge() {
    let live = live();
    let url = format!("{}/mcp", live.base);
    let session = live.rt.block_on(open_session(&live.base));
    let mut runner = TestRunner::new(config());
    let result = runner.run(&(body_bytes(), any::<bool>()), |(body, with_session)| {
        live.rt.block_on(async {
            let sid = with_session.then_some(session.as_str());
            let reply = post(&url, sid, "application/json, text/event-stream", body.clone()).await?;
            match reply.status {
                200 => {
                    messages(&reply)?;
                    // A body that happened to be an initialize opened a session: close it.
                    if let Some(new) = reply.session.as_deref().filter(|s| *s != session) {
                        close_session(&live.base, new).await;
                    }
                }
                202 => {}
                400 | 404 => {
                    let code = check_jsonrpc_error(&reply)?;
                    prop_assert!([-32700, -32600, -32001].contains(&code), "{}", reply.text);
                }
                other => {
                    prop_assert!(false, "status {} for {:?}: {}", other, String::from_utf8_lossy(&body), reply.text)
                }
            }
            no_panics()
        })
    });
    result.unwrap();
    live.rt.block_on(async {
        close_session(&live.base, &session).await;
        still_serves(live).await;
    });
}

#[test]
fn sse_message_bodies_get_a_verdict_and_requests_their_answer_on_the_stream() {
    let live = live();
    let (post_url, events) = live.rt.block_on(async {
        let r = http().get(format!("{}/sse", live.base)).header("accept", "text/event-stream").send().await.unwrap();
        assert_eq!(r.status(), 200);
        // Collect the stream's events in the background.
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(String, String)>();
        tokio::spawn(async move {
            let mut body = r.bytes_stream();
            let mut buf = String::new();
            while let Some(Ok(chunk)) = body.next().await {
                buf.push_str(&String::from_utf8_lossy(&chunk));
                while let Some(end) = buf.find("\n\n") {
                    let event: String = buf.drain(..end + 2).collect();
                    let name = event.lines().find_map(|l| l.strip_prefix("event:")).unwrap_or("message").trim();
                    let data: Vec<&str> =
                        event.lines().filter_map(|l| l.strip_prefix("data:")).map(str::trim_start).collect();
                    if !data.is_empty() && tx.send((name.to_string(), data.join("\n"))).is_err() {
                        return;
                    }
                }
            }
        });
        let (name, endpoint) = tokio::time::timeout(POST_LIMIT, rx.recv()).await.unwrap().unwrap();
        assert_eq!(name, "endpoint");
        (format!("{}/{endpoint}", live.base), rx)
    });
    let mut runner = TestRunner::new(config());
    let events = std::cell::RefCell::new(events);
    let result = runner.run(&message_body(), |body| {
        let mut events = events.borrow_mut();
        live.rt.block_on(async {
            let bytes = body.to_string().into_bytes();
            let reply = post(&post_url, None, "application/json", bytes).await?;
            match expect(&body) {
                Expect::Invalid => {
                    prop_assert_eq!(reply.status, 400, "{}", reply.text);
                    check_jsonrpc_error(&reply)?;
                }
                Expect::Accepted => prop_assert_eq!(reply.status, 202, "{}", reply.text),
                Expect::Answered(mut ids) => {
                    prop_assert_eq!(reply.status, 202, "{}", reply.text);
                    // Every request is answered on the stream.
                    while !ids.is_empty() {
                        let event = tokio::time::timeout(POST_LIMIT, events.recv()).await;
                        let Ok(Some((_, data))) = event else {
                            return Err(TestCaseError::fail(format!("no answer on the SSE stream for {ids:?}")));
                        };
                        let msg: Value = serde_json::from_str(&data)
                            .map_err(|e| TestCaseError::fail(format!("event is not JSON ({e}): {data:.200}")))?;
                        if msg.get("method").is_none() {
                            ids.retain(|id| !same_id(&msg["id"], id));
                        }
                    }
                }
            }
            no_panics()
        })
    });
    result.unwrap();
    live.rt.block_on(still_serves(live));
}

#[test]
fn sse_message_bytes_never_break_the_bridge() {
    let live = live();
    let mut runner = TestRunner::new(config());
    let stream = live.rt.block_on(async {
        let r = http().get(format!("{}/sse", live.base)).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let mut body = r.bytes_stream();
        let first = tokio::time::timeout(POST_LIMIT, body.next()).await.unwrap().unwrap().unwrap();
        let text = String::from_utf8_lossy(&first).to_string();
        let at = text.find("messages?sessionId=").expect("endpoint event");
        let url = format!("{}/{}", live.base, text[at..].lines().next().unwrap().trim());
        (body, url)
    });
    let (body_stream, url) = stream;
    let result = runner.run(&(body_bytes(), any::<bool>()), |(body, known)| {
        live.rt.block_on(async {
            let target = if known { url.clone() } else { format!("{}/messages?sessionId=nope", live.base) };
            let reply = post(&target, None, "application/json", body.clone()).await?;
            match (known, reply.status) {
                (true, 202) => {}
                (true, 400) => {
                    check_jsonrpc_error(&reply)?;
                }
                (false, 404) => prop_assert!(reply.text.contains("session not found"), "{}", reply.text),
                (_, other) => {
                    prop_assert!(false, "status {} for {:?}: {}", other, String::from_utf8_lossy(&body), reply.text)
                }
            }
            no_panics()
        })
    });
    result.unwrap();
    drop(body_stream);
    live.rt.block_on(still_serves(live));
}

// ---------------------------------------------------------------------------------------------
// create_mcp_server arguments.

fn text_value() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => any::<String>(),
        3 => prop::sample::select(vec![
            "time", "fetch", "everything", "kubernetes", "python3", "uvx", "npx", "sh", "", " ", "a b", "x\0y",
            "/usr/bin/env", "ghcr.io/org/img:1", "--flag 'quoted arg'", "'unbalanced",
        ])
        .prop_map(str::to_owned),
        3 => "[a-zA-Z0-9 ./@:_'\"-]{0,24}",
        1 => (0usize..3).prop_map(|k| "x".repeat([65_536, 65_537, 70_000][k])),
    ]
}

fn string_map() -> impl Strategy<Value = Value> {
    let key = prop_oneof![
        "[A-Z_][A-Z0-9_]{0,6}",
        any::<String>(),
        "([a-z0-9.-]{1,12}/)?[a-zA-Z0-9_.-]{0,12}",
        Just("app.kubernetes.io/name".to_string()),
    ];
    let value = prop_oneof![3 => text_value().prop_map(Value::from), 1 => json_value()];
    prop::collection::btree_map(key, value, 0..5).prop_map(|m| Value::Object(m.into_iter().collect()))
}

/// `create_mcp_server` arguments: mostly the right shapes with awkward values, sometimes wrong
/// types and unknown members.
fn create_args() -> impl Strategy<Value = Value> {
    let field = |v: BoxedStrategy<Value>| prop::option::weighted(0.4, v);
    let text = || text_value().prop_map(Value::from).boxed();
    let args = prop_oneof![
        prop::collection::vec(text_value(), 0..4).prop_map(|v| json!(v)),
        (0usize..2).prop_map(|k| json!(vec!["a"; [256, 257][k]])),
        text_value().prop_map(Value::from),
        json_value(),
    ]
    .boxed();
    let ttl = prop_oneof![any::<u64>().prop_map(Value::from), (0u64..4).prop_map(Value::from), json_value()].boxed();
    let wait = prop_oneof![any::<bool>().prop_map(Value::from), json_value()].boxed();
    let fields = (
        (field(text()), field(text()), field(text()), field(args), field(text())),
        (
            field(string_map().boxed()),
            field(string_map().boxed()),
            field(wait),
            field(ttl),
            field(string_map().boxed()),
        ),
        prop::option::weighted(0.1, ("[a-z_]{1,12}", json_value())),
    );
    let shaped = fields.prop_map(|((preset, exec, mcp, args, image), (env, secret, wait, ttl, labels), unknown)| {
        let mut m = Map::new();
        for (k, v) in [
            ("preset", preset),
            ("runtime_exec", exec),
            ("runtime_mcp", mcp),
            ("runtime_args", args),
            ("image", image),
            ("env", env),
            ("secret_env", secret),
            ("wait_for_ready", wait),
            ("ttl_seconds", ttl),
            ("labels", labels),
        ] {
            if let Some(v) = v {
                m.insert(k.into(), v);
            }
        }
        if let Some((k, v)) = unknown {
            m.insert(k, v);
        }
        Value::Object(m)
    });
    prop_oneof![4 => shaped, 1 => json_value(), 3 => plausible_request()]
}

/// Requests a careful caller would send: valid names and values, so the success path (and its
/// checks) is reached often, with awkward but legal content.
fn plausible_request() -> impl Strategy<Value = Value> {
    let source = prop_oneof![
        prop::sample::select(vec!["time", "fetch", "everything", "memory", "git"]).prop_map(|p| json!({"preset": p})),
        (
            prop::sample::select(vec!["uvx", "npx", "python3", "/usr/bin/env"]),
            "[a-z][a-z0-9@/._-]{0,20}",
            prop::collection::vec("[^\\x00]{0,12}", 0..4)
        )
            .prop_map(|(exec, mcp, args)| json!({"runtime_exec": exec, "runtime_mcp": mcp, "runtime_args": args})),
    ];
    // Now and then a name that starts with a digit, which must be refused.
    let env_name = prop_oneof![12 => "[A-Za-z_][A-Za-z0-9_]{0,8}", 1 => "[0-9][A-Z0-9_]{0,4}"];
    let env = prop::collection::btree_map(env_name, "[^\\x00]{0,16}", 0..4);
    let labels = prop::collection::btree_map(
        "([a-z0-9]([a-z0-9-]{0,6}[a-z0-9])?\\.)?[a-z]{1,6}/[a-zA-Z0-9]{1,8}|[a-zA-Z][a-zA-Z0-9_.-]{0,10}[a-zA-Z0-9]",
        "([a-zA-Z0-9]([a-zA-Z0-9_.-]{0,10}[a-zA-Z0-9])?)?",
        0..4,
    );
    let ttl = prop::option::of(1u64..=604_800);
    (source, env, labels, ttl, any::<bool>()).prop_map(|(mut req, env, labels, ttl, wait)| {
        req["env"] = json!(env);
        req["labels"] = json!(labels);
        req["wait_for_ready"] = json!(wait);
        if let Some(ttl) = ttl {
            req["ttl_seconds"] = json!(ttl);
        }
        req
    })
}

// An oracle written from Kubernetes' and POSIX's rules, not from the production checks.

/// `[A-Za-z_][A-Za-z0-9_]*`, at most 64 KiB values without NUL.
fn oracle_env(env: &BTreeMap<String, String>) -> bool {
    env.len() <= 256
        && env.iter().all(|(k, v)| {
            let mut chars = k.chars();
            chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
                && v.len() <= 65_536
                && !v.contains('\0')
        })
}

/// A label value (or the name part of a key): empty, or up to 63 of `[A-Za-z0-9_.-]` starting
/// and ending alphanumeric.
fn oracle_label_value(v: &str) -> bool {
    v.is_empty()
        || (v.len() <= 63
            && v.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            && v.starts_with(|c: char| c.is_ascii_alphanumeric())
            && v.ends_with(|c: char| c.is_ascii_alphanumeric()))
}

/// Kubernetes label rules: an optional DNS-subdomain prefix and `/`, a non-empty name; the
/// project's own prefixes are reserved.
fn oracle_labels(labels: &BTreeMap<String, String>) -> bool {
    let dns_label = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    labels.len() <= 256
        && labels.iter().all(|(k, v)| {
            let (prefix, name) = match k.rsplit_once('/') {
                Some((p, n)) => (Some(p), n),
                None => (None, k.as_str()),
            };
            !k.starts_with("app.kubernetes.io/")
                && !k.starts_with("mcp-ephemeral.dev/")
                && prefix.is_none_or(|p| p.len() <= 253 && p.split('.').all(dns_label))
                && !name.is_empty()
                && oracle_label_value(name)
                && oracle_label_value(v)
        })
}

/// The start of a JSON value, for failure messages.
fn truncate(v: &Value) -> String {
    v.to_string().chars().take(300).collect()
}

/// What a refused request's message must name: one of the request's fields, or the rule broken.
const NAMED_IN_ERRORS: [&str; 13] = [
    "preset",
    "runtime_exec",
    "runtime_mcp",
    "runtime_args",
    "image",
    "env",
    "environment variable",
    "ttl_seconds",
    "label",
    "resources",
    "arguments",
    "NUL",
    "bytes",
];

#[test]
fn create_arguments_resolve_to_a_valid_spec_or_a_clear_error() {
    let live = live();
    let policy = Policy::default();
    let mut runner = TestRunner::new(config());
    let resolved = AtomicUsize::new(0);
    let result = runner.run(&create_args(), |args| {
        let req = match serde_json::from_value::<CreateRequest>(args.clone()) {
            Ok(r) => r,
            Err(e) => {
                // The shape is wrong: the message says how (serde's own words), or names a field.
                let msg = e.to_string();
                let says_how =
                    ["unknown field", "invalid type", "invalid value", "did not match any variant", "expected"]
                        .iter()
                        .any(|w| msg.contains(w));
                prop_assert!(says_how, "an unhelpful error for {}: {msg}", truncate(&args));
                return Ok(());
            }
        };
        let local = Capabilities { kind: RuntimeKind::Local, images: false, egress: false };
        let spec = match resolve(req, &live.presets, &policy, local) {
            Ok(spec) => spec,
            Err(e) => {
                let msg = e.to_string();
                prop_assert!(
                    NAMED_IN_ERRORS.iter().any(|w| msg.contains(w)),
                    "the refusal names no field or rule: {msg} (for {})",
                    truncate(&args)
                );
                return Ok(());
            }
        };
        resolved.fetch_add(1, Ordering::Relaxed);
        let name = &spec.identity.name;
        prop_assert!(
            (2..=63).contains(&name.len())
                && name.starts_with(|c: char| c.is_ascii_lowercase())
                && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && !name.ends_with('-'),
            "name {:?}",
            name
        );
        prop_assert!(oracle_env(&spec.launch.env), "{:?}", spec.launch.env);
        prop_assert!(oracle_env(&spec.launch.secret_env));
        prop_assert!(oracle_labels(&spec.identity.labels), "{:?}", spec.identity.labels);
        prop_assert!(
            spec.identity.ttl >= Duration::from_secs(1) && spec.identity.ttl <= policy.max_ttl,
            "{:?}",
            spec.identity.ttl
        );
        prop_assert_eq!(spec.identity.expires_at, spec.identity.created_at + spec.identity.ttl);
        let Source::Command { argv } = &spec.launch.source else {
            return Err(TestCaseError::fail("an image spec from the local runtime"));
        };
        let exec = &argv[0];
        prop_assert!(
            !exec.trim().is_empty() && !exec.chars().any(|c| c.is_whitespace() || c.is_control()),
            "{:?}",
            argv
        );
        prop_assert!(argv.len() <= 256 + 2, "{} arguments", argv.len());
        for a in argv {
            prop_assert!(a.len() <= 65_536 && !a.contains('\0'));
        }
        if let Some(preset) = &spec.identity.preset {
            prop_assert!(live.presets.get(preset).is_some());
            prop_assert_eq!(args.get("preset").and_then(Value::as_str), Some(preset.as_str()));
        }
        no_panics()
    });
    result.unwrap();
    // The generator must reach the success path often enough for the checks above to mean
    // something.
    let cases = config().cases as usize;
    let ok = resolved.load(Ordering::Relaxed);
    assert!(ok * 5 >= cases, "only {ok} of {cases} generated requests resolved; the generator is too hostile");
}

// ---------------------------------------------------------------------------------------------
// Preset files.

const GOOD_PRESET: &str = "name = \"my-server\"\ndescription = \"d\"\nruntime_exec = \"uvx\"\nruntime_mcp = \"m\"\n\
     runtime_args = [\"--flag\"]\nrequired_env = [\"KEY\"]\noptional_env = [\"R\"]\n[env]\nA = \"1\"\n";

fn toml_ish() -> impl Strategy<Value = String> {
    let key = prop::sample::select(vec![
        "name",
        "description",
        "runtime_exec",
        "runtime_mcp",
        "runtime_args",
        "required_env",
        "optional_env",
        "needs_kube_api",
        "image",
        "typo",
    ]);
    let value = prop_oneof![
        "\"[a-zA-Z0-9 _./-]{0,12}\"",
        any::<String>().prop_map(|s| format!("{s:?}")),
        "'[^'\n]{0,10}'",
        "\\[(\"[A-Za-z0-9_ -]{0,6}\", ?){0,3}\\]",
        prop::sample::select(vec!["true", "1", "1.5", "[]", "{}", "\"\"", "[1, \"a\"]", "nan", "\"\"\"x\n\"\"\""])
            .prop_map(str::to_owned),
        "[a-z0-9\\[\\]{}\"'=., -]{0,12}",
    ];
    let line = prop_oneof![
        6 => (key, value.clone()).prop_map(|(k, v)| format!("{k} = {v}")),
        1 => ("[A-Za-z0-9_ -]{1,8}", value).prop_map(|(k, v)| format!("[env]\n{k} = {v}")),
        1 => "[^\n]{0,30}",
    ];
    prop_oneof![
        4 => prop::collection::vec(line, 0..9).prop_map(|l| l.join("\n")),
        1 => any::<String>(),
        2 => (any::<prop::sample::Index>(), any::<char>(), any::<bool>()).prop_map(|(at, c, insert)| {
            let mut chars: Vec<char> = GOOD_PRESET.chars().collect();
            let i = at.index(chars.len());
            if insert { chars.insert(i, c) } else { chars.remove(i); }
            chars.into_iter().collect()
        }),
    ]
}

#[test]
fn preset_files_parse_to_a_valid_preset_or_an_error_naming_the_file() {
    let dir = std::env::temp_dir().join(format!("mcp-eph-prop-presets-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file: PathBuf = dir.join("case.toml");
    let mut runner = TestRunner::new(config());
    let result = runner.run(&toml_ish(), |text| {
        let parsed = presets::parse(&text);
        if let Ok(p) = &parsed {
            prop_assert!(names::is_rfc1123_label(&p.name), "{:?}", p.name);
            prop_assert!(!p.runtime_exec.trim().is_empty());
            for var in p.env.keys().chain(&p.required_env).chain(&p.optional_env) {
                prop_assert!(spec::is_env_name(var), "{:?}", var);
            }
        }
        std::fs::write(&file, &text).unwrap();
        match (Presets::load(Some(&dir)), parsed) {
            (Ok(all), Ok(p)) => prop_assert_eq!(all.get(&p.name).map(|q| q.argv()), Some(p.argv())),
            (Err(e), Err(why)) => {
                let e = e.to_string();
                prop_assert!(e.contains(&file.display().to_string()), "the error does not name the file: {}", e);
                prop_assert!(e.contains(&why), "{} does not say {}", e, why);
            }
            (all, parsed) => prop_assert!(false, "load {:?} but parse {:?}", all.map(|_| ()), parsed.map(|p| p.name)),
        }
        no_panics()
    });
    std::fs::remove_dir_all(&dir).unwrap();
    result.unwrap();
}

// ---------------------------------------------------------------------------------------------
// Names.

#[test]
fn names_are_valid_and_unique_for_any_base() {
    let mut runner = TestRunner::new(config());
    let base = prop_oneof![
        any::<String>(),
        "[a-zA-Z0-9@/:._ -]{0,80}",
        "[0-9-]{0,10}[a-z]{0,3}",
        prop::sample::select(vec!["", "-", "9", "@scope/9pkg@1.2", "ghcr.io/Org/Img:tag", "é"]).prop_map(str::to_owned),
    ];
    let result = runner.run(&base, |base| {
        let names: Vec<String> = (0..32).map(|_| names::generate(&base)).collect();
        let stem = &names[0][..names[0].len() - 9];
        for n in &names {
            prop_assert!(names::is_rfc1123_label(n), "{:?} → {:?}", base, n);
            prop_assert!(n.len() <= 63, "{:?} → {:?}", base, n);
            prop_assert!(n.starts_with(|c: char| c.is_ascii_lowercase()), "{:?} → {:?}", base, n);
            prop_assert_eq!(&n[..n.len() - 9], stem, "the stem depends on the base only");
        }
        prop_assert_eq!(names.iter().collect::<HashSet<_>>().len(), names.len());
        Ok(())
    });
    result.unwrap();
    // Many draws from one base almost never repeat: 200,000 draws from 36^8 suffixes collide
    // about 0.007 times on average (birthday bound), so more than three collisions (odds about
    // 1e-10) means the suffixes are not random enough; an exact count would fail 0.7% of runs.
    let draws: HashSet<String> = (0..200_000).map(|_| names::generate("time")).collect();
    assert!(draws.len() >= 200_000 - 3, "{} collisions in 200,000 names", 200_000 - draws.len());
}
