//! JSON-RPC over WebSocket: each client connection is relayed to one ready
//! node's WebSocket (geth serves it on its HTTP port with `--ws
//! --ws.port=<http port>`). Every client frame passes the same rules as HTTP
//! calls; refused calls are answered here and never reach the node.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::ws::{Message, WebSocket};
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message as NodeMessage;

use super::{error, policy, Gateway, Slot};

pub async fn relay(gw: Arc<Gateway>, peer: SocketAddr, mut client: WebSocket) {
    let snap = gw.snapshot();
    let mut node = None;
    for up in snap.nodes.iter().take(2) {
        match tokio_tungstenite::connect_async(up.ws.as_str()).await {
            Ok((socket, _)) => {
                node = Some((socket, up.name.clone()));
                break;
            }
            Err(e) => {
                gw.app.gateway.upstream_failure(&up.name);
                tracing::warn!(node = %up.name, "gateway: node WebSocket failed: {e}");
            }
        }
    }
    let Some((node, name)) = node else {
        let answer = error(
            Value::Null,
            policy::code::UNAVAILABLE,
            "no ready node takes WebSocket connections; try again (gateway rule: ready-nodes)",
        );
        let _ = client.send(Message::Text(answer.to_string().into())).await;
        return;
    };
    tracing::info!(target: "gateway::access", client = %peer.ip(), node = %name, "websocket open");
    let (mut to_node, mut from_node) = node.split();
    let (mut to_client, mut from_client) = client.split();
    loop {
        tokio::select! {
            frame = from_client.next() => {
                let text = match frame {
                    Some(Ok(Message::Text(t))) => t.to_string(),
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                    _ => break,
                };
                let started = Instant::now();
                match decide(&gw, peer, &text) {
                    Ok(()) => {
                        if to_node.send(NodeMessage::Text(text.into())).await.is_err() {
                            break;
                        }
                    }
                    Err(answer) => {
                        if to_client.send(Message::Text(answer.to_string().into())).await.is_err() {
                            break;
                        }
                    }
                }
                gw.app.gateway.observe("ws", started.elapsed().as_secs_f64());
            }
            frame = from_node.next() => {
                let text = match frame {
                    Some(Ok(NodeMessage::Text(t))) => t.to_string(),
                    Some(Ok(NodeMessage::Ping(_) | NodeMessage::Pong(_) | NodeMessage::Frame(_))) => continue,
                    _ => break,
                };
                if to_client.send(Message::Text(text.into())).await.is_err() {
                    break;
                }
            }
        }
    }
    let _ = to_node.close().await;
    tracing::info!(target: "gateway::access", client = %peer.ip(), node = %name, "websocket closed");
}

/// Ok to relay the frame as it is; otherwise the answer for the client: a
/// frame is relayed only when every call in it passes.
fn decide(gw: &Gateway, peer: SocketAddr, text: &str) -> Result<(), Value> {
    let request: Value = serde_json::from_str(text).map_err(|e| {
        error(
            Value::Null,
            policy::code::PARSE,
            &format!("invalid JSON: {e}"),
        )
    })?;
    let (calls, batch) = match request {
        Value::Array(calls) if !calls.is_empty() && calls.len() <= gw.max_batch => (calls, true),
        Value::Array(calls) => {
            let message = format!(
                "batch of {} calls refused: 1 to {} per batch (gateway rule: batch-size)",
                calls.len(),
                gw.max_batch
            );
            return Err(error(Value::Null, policy::code::LIMIT, &message));
        }
        call => (vec![call], false),
    };
    if !gw.limiter.take(peer.ip(), calls.len(), Instant::now()) {
        let answers: Vec<Value> = calls
            .iter()
            .map(|c| {
                error(
                    c.get("id").cloned().unwrap_or(Value::Null),
                    policy::code::LIMIT,
                    "too many calls from this client: slow down (gateway rule: rate-limit)",
                )
            })
            .collect();
        return Err(pack(answers, batch));
    }
    let snap = gw.snapshot();
    let mut refused = false;
    let mut forwarded = 0;
    let mut answers = Vec::new();
    for call in calls {
        let id = call.get("id").cloned().unwrap_or(Value::Null);
        let (slot, method, allowed) = gw.decide(call, &snap, false);
        match slot {
            Slot::Done(answer) => {
                refused |= answer.get("error").is_some();
                let outcome = if answer.get("error").is_some() {
                    "refused"
                } else {
                    "ok"
                };
                gw.app.gateway.call(&method, allowed, outcome);
                answers.push(answer);
            }
            Slot::Forward { .. } => {
                forwarded += 1;
                gw.app.gateway.call(&method, allowed, "relayed");
                answers.push(error(
                    id,
                    policy::code::INVALID_REQUEST,
                    "not sent: another call of this batch was refused (gateway rule: batch-all-or-nothing)",
                ));
            }
        }
    }
    // Refused calls, and calls all answered here, never reach the node.
    if refused || forwarded == 0 {
        return Err(pack(answers, batch));
    }
    // Batches with local answers (gas price) go to the node as they are.
    Ok(())
}

fn pack(answers: Vec<Value>, batch: bool) -> Value {
    if batch {
        Value::Array(answers)
    } else {
        answers.into_iter().next().unwrap_or(Value::Null)
    }
}
