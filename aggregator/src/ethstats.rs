//! geth's own ethstats reporter (`geth --ethstats name:secret@host:port`) at
//! `/api` (websocket), so a node without an agent still appears — with its real
//! clique signer per block (geth's reporter puts the sealer in `block.miner`).
//!
//! Frames are `{"emit": [topic, payload]}`. `hello` is answered with exactly
//! `{"emit":["ready"]}`; `node-ping` with a two-element `node-pong`, a few
//! milliseconds later (geth's client races on an instant answer);
//! `primus::ping::X` with `primus::pong::X`. A bad secret or anything that is
//! not such a frame closes that connection only.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::response::Response;
use geth_wire::BlockReport;
use serde_json::{json, Value};

use crate::app::{now_ms, App};

/// Largest frame accepted (geth's history frames are the biggest, tens of KiB).
const MAX_FRAME: usize = 1024 * 1024;
/// A client must log in this fast.
const LOGIN_TIMEOUT: Duration = Duration::from_secs(10);

pub async fn upgrade(State(app): State<Arc<App>>, ws: WebSocketUpgrade) -> Response {
    ws.max_message_size(MAX_FRAME)
        .max_frame_size(MAX_FRAME)
        .on_upgrade(move |socket| session(app, socket))
}

async fn send(socket: &mut WebSocket, value: Value) -> bool {
    socket
        .send(Message::Text(value.to_string().into()))
        .await
        .is_ok()
}

async fn session(app: Arc<App>, mut socket: WebSocket) {
    let mut name: Option<String> = None;
    let started = tokio::time::Instant::now();
    loop {
        let wait = if name.is_none() {
            LOGIN_TIMEOUT.saturating_sub(started.elapsed())
        } else {
            Duration::from_secs(60)
        };
        let message = match tokio::time::timeout(wait, socket.recv()).await {
            Ok(Some(Ok(message))) => message,
            Ok(_) => break,
            Err(_) => {
                tracing::info!(node = ?name, "ethstats client silent; closing");
                break;
            }
        };
        let text = match message {
            Message::Text(t) => t.to_string(),
            Message::Binary(_) => return drop_client(&name, "binary frame"),
            Message::Ping(_) | Message::Pong(_) => continue,
            Message::Close(_) => break,
        };
        // primus keep-alive: "primus::ping::<n>", often JSON-quoted.
        let bare = text.trim().trim_matches('"');
        if let Some(n) = bare.strip_prefix("primus::ping::") {
            if socket
                .send(Message::Text(format!("\"primus::pong::{n}\"").into()))
                .await
                .is_err()
            {
                break;
            }
            continue;
        }
        let Some((topic, payload)) = parse(&text) else {
            return drop_client(&name, "not an ethstats frame");
        };
        match (topic.as_str(), &name) {
            ("hello", None) => match login(&app, &payload) {
                Ok(n) => {
                    tracing::info!(node = %n, "ethstats node logged in");
                    name = Some(n);
                    if !send(&mut socket, json!({"emit": ["ready"]})).await {
                        break;
                    }
                }
                Err(reason) => return drop_client(&name, &reason),
            },
            (_, None) => return drop_client(&name, "frame before login"),
            ("node-ping", Some(_)) => {
                tokio::time::sleep(Duration::from_millis(5)).await;
                let client_time = payload.get("clientTime").cloned().unwrap_or(Value::Null);
                let pong = json!({"emit": ["node-pong", {"clientTime": client_time, "serverTime": now_ms()}]});
                if !send(&mut socket, pong).await {
                    break;
                }
            }
            ("block", Some(n)) => {
                if let Some(block) = payload.get("block").and_then(block_report) {
                    let id = format!("ethstats:{n}");
                    app.live().on_block(&id, n, "ethstats", &block, now_ms());
                    app.store.sighting(&id, block);
                } else {
                    return drop_client(&name, "malformed block");
                }
            }
            ("stats", Some(n)) => on_stats(&app, n, &payload),
            ("pending", Some(n)) => {
                let pending = payload.pointer("/stats/pending").and_then(Value::as_u64);
                update(&app, n, |node| node.pending = pending);
            }
            ("latency", Some(n)) => {
                let latency = payload.get("latency").and_then(number);
                update(&app, n, |node| node.latency_ms = latency);
            }
            _ => {} // history and anything newer: not needed
        }
    }
    if let Some(n) = name {
        tracing::info!(node = %n, "ethstats node disconnected");
    }
}

fn drop_client(name: &Option<String>, reason: &str) {
    tracing::warn!(node = ?name, reason, "dropping ethstats client");
}

fn parse(text: &str) -> Option<(String, Value)> {
    let value: Value = serde_json::from_str(text).ok()?;
    let emit = value.get("emit")?.as_array()?;
    let topic = emit.first()?.as_str()?.to_owned();
    Some((topic, emit.get(1).cloned().unwrap_or(Value::Null)))
}

fn login(app: &App, hello: &Value) -> Result<String, String> {
    let name = hello
        .pointer("/info/name")
        .or_else(|| hello.get("id"))
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty() && n.len() <= 64)
        .ok_or("hello without a node name")?;
    let secret = hello
        .get("secret")
        .and_then(Value::as_str)
        .unwrap_or_default();
    match app.ethstats_secrets.get(name) {
        Some(expected) if constant_time_eq(expected.as_bytes(), secret.as_bytes()) => {}
        _ => return Err(format!("bad ethstats credentials for {name:?}")),
    }
    let client = hello
        .pointer("/info/node")
        .and_then(Value::as_str)
        .map(str::to_owned);
    update(app, name, |node| node.client = client);
    Ok(name.to_owned())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn update(app: &App, name: &str, f: impl FnOnce(&mut crate::live::NodeView)) {
    let mut live = app.live();
    let id = format!("ethstats:{name}");
    let node = live.node_mut(&id, name, "ethstats");
    f(node);
    node.last_seen_ms = now_ms();
    node.online = true;
    let view = node.clone();
    let _ = live.updates.send(crate::live::Update::Node(Box::new(view)));
}

fn on_stats(app: &App, name: &str, payload: &Value) {
    let stats = payload.get("stats").cloned().unwrap_or(Value::Null);
    update(app, name, |node| {
        node.peers = stats.get("peers").and_then(number);
        node.mining = stats.get("mining").and_then(Value::as_bool);
        node.uptime_s = stats.get("uptime").and_then(number);
        node.gas_price = stats
            .get("gasPrice")
            .map(|g| g.to_string().trim_matches('"').to_owned());
    });
}

/// ethstats numbers arrive as JSON numbers or strings.
fn number(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

fn block_report(b: &Value) -> Option<BlockReport> {
    let hash = b.get("hash")?.as_str()?.to_owned();
    let height = b.get("number").and_then(number)?;
    // The genesis has no sealer (geth reports 0x0).
    let signer = b
        .get("miner")
        .and_then(Value::as_str)
        .map(str::to_lowercase)
        .filter(|_| height > 0);
    Some(BlockReport {
        number: height,
        hash,
        parent_hash: b.get("parentHash")?.as_str()?.to_owned(),
        timestamp: b.get("timestamp").and_then(number)?,
        signer,
        difficulty: b.get("difficulty").and_then(number).unwrap_or(0),
        transactions: b
            .get("transactions")
            .and_then(Value::as_array)
            .map_or(0, |t| t.len() as u64),
        gas_used: b.get("gasUsed").and_then(number).unwrap_or(0),
        gas_limit: b.get("gasLimit").and_then(number).unwrap_or(0),
        seen_at_ms: now_ms(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_and_blocks_parse_leniently() {
        assert_eq!(
            parse(r#"{"emit":["ready"]}"#).map(|(t, _)| t),
            Some("ready".into())
        );
        assert!(parse("garbage").is_none());
        assert!(parse(r#"{"emit":[]}"#).is_none());
        let block = json!({"number": 7, "hash": "0xaa", "parentHash": "0xbb", "timestamp": 100,
            "miner": "0xAbC", "difficulty": "2", "gasUsed": 0, "gasLimit": 30000000, "transactions": [{"hash": "0x1"}]});
        let b = block_report(&block).unwrap();
        assert_eq!((b.number, b.difficulty, b.transactions), (7, 2, 1));
        assert_eq!(b.signer.as_deref(), Some("0xabc"));
        assert!(block_report(&json!({"number": 1})).is_none());
        assert!(
            constant_time_eq(b"ab", b"ab")
                && !constant_time_eq(b"ab", b"ac")
                && !constant_time_eq(b"a", b"ab")
        );
    }
}
