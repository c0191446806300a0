//! `GET pods/{name}/portforward?ports=P,…` as the websocket the kube client speaks (subprotocol
//! `v4.channel.k8s.io` or `portforward.k8s.io`): binary frames whose first byte is the channel,
//! two channels per port (data 2i, error 2i+1), each opened by the server with the port as 2
//! little-endian bytes. Each port is a fresh TCP connection to the pod's `podIP:mappedPort`;
//! closing either side closes the other, and a connection refused is reported on the error
//! channel, as the kubelet does. Only pods of the process kubelet can be forwarded: for other
//! pods `serves` is false and the route answers 501 as before.

use std::{collections::HashMap, sync::Arc, sync::atomic::Ordering};

use axum::{
    body::Body,
    extract::Request,
    http::{StatusCode, header},
    response::Response,
};
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    sync::mpsc,
};
use tokio_tungstenite::{
    WebSocketStream,
    tungstenite::{Message, handshake::derive_accept_key, protocol::Role},
};

use super::{
    Shared,
    kubelet::pods_type,
    processes::PodNet,
    status::ApiError,
    store::{Key, uid_of},
};

/// The subprotocols answered, in the order preferred.
const PROTOCOLS: [&str; 2] = ["v4.channel.k8s.io", "portforward.k8s.io"];

/// The pod's uid and network if it is a process-kubelet pod.
fn target(shared: &Shared, ns: &str, name: &str) -> Option<(String, PodNet)> {
    let uid = uid_of(shared.store.lock().expect("store lock").get(&Key::new(pods_type(), ns, name))?).to_string();
    let net = shared.processes.pod(&uid)?;
    Some((uid, net))
}

/// Whether `ns/name` is a pod this module forwards to.
pub(crate) fn serves(shared: &Shared, ns: &str, name: &str) -> bool {
    target(shared, ns, name).is_some()
}

/// Answer the upgrade and tunnel the ports from a task.
pub(crate) fn upgrade(
    shared: &Arc<Shared>,
    ns: &str,
    name: &str,
    query: &HashMap<String, String>,
    mut req: Request,
) -> Response {
    let Some((uid, net)) = target(shared, ns, name) else {
        return ApiError::not_found(pods_type(), name).response();
    };
    if !net.running {
        return ApiError::bad_request(format!("pod {name} is not running")).response();
    }
    let ports: Result<Vec<u16>, _> = query
        .get("ports")
        .map(String::as_str)
        .unwrap_or_default()
        .split(',')
        .filter(|p| !p.is_empty())
        .map(str::parse)
        .collect();
    let ports = match ports {
        Ok(p) if !p.is_empty() => p,
        _ => return ApiError::bad_request("at least one valid port number must be specified in \"ports\"").response(),
    };
    let headers = req.headers();
    let is_websocket =
        headers.get(header::UPGRADE).and_then(|v| v.to_str().ok()).is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    let Some(key) = headers.get(header::SEC_WEBSOCKET_KEY).filter(|_| is_websocket).cloned() else {
        return ApiError::bad_request("the fake serves port-forward only as a websocket upgrade").response();
    };
    let offered: Vec<String> = headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(',').map(|p| p.trim().to_string()))
        .collect();
    let protocol = PROTOCOLS.iter().find(|p| offered.iter().any(|o| o == *p));
    if !offered.is_empty() && protocol.is_none() {
        return ApiError::bad_request(format!("none of the subprotocols {offered:?} is supported")).response();
    }
    let Some(on_upgrade) = req.extensions_mut().remove::<hyper::upgrade::OnUpgrade>() else {
        return ApiError::internal("the connection cannot be upgraded").response();
    };
    let pod = format!("{name}_{ns}");
    let tunnel_shared = shared.clone();
    shared.spawn(async move {
        let Ok(upgraded) = on_upgrade.await else { return };
        let ws = WebSocketStream::from_raw_socket(hyper_util::rt::TokioIo::new(upgraded), Role::Server, None).await;
        tunnel(tunnel_shared, ws, &pod, &uid, net, ports).await;
    });
    let mut resp = Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::UPGRADE, "websocket")
        .header(header::CONNECTION, "Upgrade")
        .header(header::SEC_WEBSOCKET_ACCEPT, derive_accept_key(key.as_bytes()));
    if let Some(p) = protocol {
        resp = resp.header(header::SEC_WEBSOCKET_PROTOCOL, *p);
    }
    resp.body(Body::empty()).expect("valid response")
}

/// What the per-port readers tell the websocket writer.
enum FromPod {
    Data(u8, Bytes),
    Closed,
}

fn frame(channel: u8, data: &[u8]) -> Message {
    let mut v = Vec::with_capacity(data.len() + 1);
    v.push(channel);
    v.extend_from_slice(data);
    Message::Binary(v.into())
}

async fn tunnel<S>(shared: Arc<Shared>, ws: WebSocketStream<S>, pod: &str, uid: &str, net: PodNet, ports: Vec<u16>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut drops = shared.processes.tunnel_drops.subscribe();
    drops.borrow_and_update();
    let (mut sink, mut stream) = ws.split();
    for (i, port) in ports.iter().enumerate() {
        let ch = 2 * i as u8;
        for c in [ch, ch + 1] {
            if sink.send(frame(c, &port.to_le_bytes())).await.is_err() {
                return;
            }
        }
    }
    let (tx, mut rx) = mpsc::channel::<FromPod>(16);
    let mut writers: Vec<Option<tokio::net::tcp::OwnedWriteHalf>> = Vec::new();
    let mut open = 0usize;
    let mut readers = Vec::new();
    for (i, port) in ports.iter().enumerate() {
        let ch = 2 * i as u8;
        let mapped = net.ports.get(port).copied().unwrap_or(*port);
        let addr = format!("{}:{mapped}", net.ip);
        match TcpStream::connect(&addr).await {
            Ok(tcp) => {
                shared.processes.tunnels.fetch_add(1, Ordering::SeqCst);
                let _ = tcp.set_nodelay(true);
                let (mut r, w) = tcp.into_split();
                writers.push(Some(w));
                open += 1;
                let tx = tx.clone();
                readers.push(tokio::spawn(async move {
                    let mut buf = vec![0u8; 16 * 1024];
                    loop {
                        match r.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => {
                                if tx.send(FromPod::Data(ch, Bytes::copy_from_slice(&buf[..n]))).await.is_err() {
                                    return;
                                }
                            }
                        }
                    }
                    let _ = tx.send(FromPod::Closed).await;
                }));
            }
            Err(e) => {
                writers.push(None);
                let message = format!(
                    "error forwarding port {port} to pod {pod}, uid {uid}: failed to connect to {addr} inside the pod's network namespace: dial tcp4 {addr}: connect: {e}"
                );
                let _ = sink.send(frame(ch + 1, message.as_bytes())).await;
            }
        }
    }
    drop(tx);
    if open == 0 {
        let _ = sink.send(Message::Close(None)).await;
        return;
    }
    loop {
        tokio::select! {
            // A broken tunnel: the websocket ends without a close frame, mid-stream.
            _ = drops.changed() => break,
            m = rx.recv() => match m {
                Some(FromPod::Data(ch, data)) => {
                    if sink.send(frame(ch, &data)).await.is_err() {
                        break;
                    }
                }
                Some(FromPod::Closed) | None => {
                    // The pod closed a connection: the client sees the end of its stream.
                    open -= 1;
                    if open == 0 {
                        let _ = sink.send(Message::Close(None)).await;
                        break;
                    }
                }
            },
            m = stream.next() => match m {
                Some(Ok(Message::Binary(b))) if !b.is_empty() => {
                    let ch = b[0] as usize;
                    if ch.is_multiple_of(2)
                        && let Some(Some(w)) = writers.get_mut(ch / 2)
                        && w.write_all(&b[1..]).await.is_err()
                    {
                        writers[ch / 2] = None;
                    }
                }
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
                Some(Ok(_)) => {}
            },
        }
    }
    // Dropping the write halves and the readers' read halves closes the pod side.
    for r in readers {
        r.abort();
    }
}
