//! geth's own ethstats reporter (`geth --ethstats name:secret@host:port`) at
//! `/api` (websocket), so a node without an agent still appears — with its real
//! clique signer per block (geth's reporter puts the sealer in `block.miner`).
//!
//! Frames are `{"emit": [topic, payload]}`. `hello` is answered with exactly
//! `{"emit":["ready"]}`; `node-ping` with a two-element `node-pong`, a few
//! milliseconds later (geth's client races on an instant answer);
//! `primus::ping::X` with `primus::pong::X` (after login only). A bad secret or
//! anything that is not such a frame closes that connection only; a block that
//! fails the checks of `validate` is counted and skipped.
//!
//! Unauthenticated load is bounded: at most `gate::PER_ADDRESS` connections per
//! source address and `gate::TOTAL` in all may be waiting to log in (429 / 503
//! beyond), each must log in within 10 s whatever it sends, and messages before
//! login are limited to 16 KiB.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, State};
use axum::http::{Extensions, StatusCode};
use axum::response::{IntoResponse, Response};
use geth_wire::BlockReport;
use serde_json::{json, Value};

use crate::gate::LoginPermit;
use crate::idle::IdleTimer;
use crate::state::{now_ms, App};
use frame::{Frame, Hello, Stats};

mod frame;

/// Largest frame (geth's websocket library writes messages in frames of its
/// 4 KiB write buffer, so one frame is never large).
const MAX_FRAME: usize = 16 * 1024;
/// Largest message after login (geth's history messages, tens of KiB, arrive
/// in several frames). The transport limit cannot change per phase, so the
/// pre-login bound is enforced by the bounded number of pending logins and by
/// dropping any message over [`MAX_LOGIN_MESSAGE`] before login.
const MAX_MESSAGE: usize = 1024 * 1024;
/// Largest message before login (geth's `hello` is well under 1 KiB).
const MAX_LOGIN_MESSAGE: usize = 16 * 1024;
/// Read buffer per connection. The WebSocket library fills its whole read
/// buffer on every read (128 KiB by default: 125 MiB of RSS at 1,000
/// reporters) and zeroes it first; geth's frames fit its 4 KiB write
/// buffer, and the buffer grows for a longer one.
const READ_BUFFER: usize = 4 * 1024;
/// A client must log in this fast, whatever it sends meanwhile.
const LOGIN_TIMEOUT: Duration = Duration::from_secs(10);
/// A logged-in client silent this long is gone (geth reports every 15 s).
const SILENCE_TIMEOUT: Duration = Duration::from_secs(60);

pub async fn upgrade(
    State(app): State<Arc<App>>,
    extensions: Extensions,
    ws: WebSocketUpgrade,
) -> Response {
    let address = extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |c| c.0.ip());
    let permit = match app.logins.try_admit(address) {
        Ok(p) => p,
        Err(refusal) => {
            app.note_refusal(&format!("ethstats@{address}"), &refusal);
            let code = StatusCode::from_u16(refusal.reason.status())
                .unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
            return crate::ingest::error(code, refusal.message).into_response();
        }
    };
    ws.max_message_size(MAX_MESSAGE)
        .max_frame_size(MAX_FRAME)
        .read_buffer_size(READ_BUFFER)
        .on_upgrade(move |socket| session(app, socket, permit))
}

async fn send(socket: &mut WebSocket, value: Value) -> bool {
    socket
        .send(Message::Text(value.to_string().into()))
        .await
        .is_ok()
}

async fn session(app: Arc<App>, mut socket: WebSocket, permit: LoginPermit) {
    let mut permit = Some(permit);
    let mut name: Option<String> = None;
    // The node's id in the live view, made once at login.
    let mut id = String::new();
    // Before login, the login deadline (messages do not extend it); after,
    // silence is measured from the last message.
    let mut idle = IdleTimer::new(LOGIN_TIMEOUT);
    loop {
        let message = tokio::select! {
            message = socket.recv() => match message {
                Some(Ok(message)) => message,
                _ => break,
            },
            () = idle.expired() => {
                tracing::info!(node = ?name, "ethstats client silent or not logged in in time; closing");
                break;
            }
        };
        if name.is_some() {
            idle.touch();
        }
        let text = match message {
            Message::Text(t) => t,
            Message::Binary(_) => return drop_client(&name, "binary frame"),
            // Websocket pings are answered by the transport; they do not
            // extend the login deadline (it is fixed above).
            Message::Ping(_) | Message::Pong(_) => continue,
            Message::Close(_) => break,
        };
        if name.is_none() && text.len() > MAX_LOGIN_MESSAGE {
            return drop_client(&name, "oversized frame before login");
        }
        // primus keep-alive: "primus::ping::<n>", often JSON-quoted; answered
        // only for logged-in nodes.
        let bare = text.trim().trim_matches('"');
        if let Some(n) = bare.strip_prefix("primus::ping::") {
            if name.is_some()
                && socket
                    .send(Message::Text(format!("\"primus::pong::{n}\"").into()))
                    .await
                    .is_err()
            {
                break;
            }
            continue;
        }
        if bare.starts_with("primus::pong::") {
            continue;
        }
        let Some(frame) = Frame::parse(&text) else {
            return drop_client(&name, "not an ethstats frame");
        };
        match (frame, &name) {
            (Frame::Hello(hello), None) => match login(&app, &hello) {
                Ok(n) => {
                    tracing::info!(node = %n, "ethstats node logged in");
                    id = live_id(&n);
                    idle.restart(SILENCE_TIMEOUT);
                    name = Some(n);
                    // Logged in: no longer counts against the pending logins.
                    permit.take();
                    if !send(&mut socket, json!({"emit": ["ready"]})).await {
                        break;
                    }
                }
                Err(reason) => return drop_client(&name, &reason),
            },
            (_, None) => return drop_client(&name, "frame before login"),
            (Frame::NodePing(client_time), Some(_)) => {
                tokio::time::sleep(Duration::from_millis(5)).await;
                let pong = json!({"emit": ["node-pong", {"clientTime": client_time, "serverTime": now_ms()}]});
                if !send(&mut socket, pong).await {
                    break;
                }
            }
            (Frame::Block(block), Some(n)) => match block {
                Some(block) => on_block(&app, &id, n, block),
                None => return drop_client(&name, "malformed block"),
            },
            (Frame::Stats(stats), Some(n)) => on_stats(&app, &id, n, stats),
            (Frame::Pending(pending), Some(n)) => {
                update(&app, &id, n, |node| node.pending = pending)
            }
            (Frame::Latency(latency), Some(n)) => {
                update(&app, &id, n, |node| node.latency_ms = latency)
            }
            // A second hello, history and anything newer: not needed.
            (Frame::Hello(_) | Frame::Other, Some(_)) => {}
        }
    }
    if let Some(n) = name {
        tracing::info!(node = %n, "ethstats node disconnected");
    }
}

/// A block from geth's reporter: the same checks as an agent's report; a
/// refused one is counted and skipped (the connection stays).
fn on_block(app: &App, id: &str, name: &str, block: BlockReport) {
    let now = now_ms();
    let sighted = {
        let mut live = app.live();
        if let Err(refusal) = live.check_block(id, &block, now) {
            drop(live);
            app.note_refusal(id, &refusal);
            return;
        }
        live.on_block(id, name, "ethstats", &block, now)
    };
    if sighted {
        app.store.sighting(id, block);
    }
}

/// The live view's id of an ethstats login (an agent's is its address).
pub fn live_id(name: &str) -> String {
    format!("ethstats:{name}")
}

fn drop_client(name: &Option<String>, reason: &str) {
    tracing::warn!(node = ?name, reason, "dropping ethstats client");
}

fn login(app: &App, hello: &Hello) -> Result<String, String> {
    let name = hello
        .name()
        .filter(|n| !n.is_empty() && n.len() <= 64)
        .ok_or("hello without a node name")?;
    let secret = hello.secret.as_deref().unwrap_or_default();
    match app.ethstats_secrets.get(name) {
        Some(expected) if constant_time_eq(expected.as_bytes(), secret.as_bytes()) => {}
        _ => return Err(format!("bad ethstats credentials for {name:?}")),
    }
    let client = hello.info.node.clone();
    update(app, &live_id(name), name, |node| node.client = client);
    Ok(name.to_owned())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn update(app: &App, id: &str, name: &str, f: impl FnOnce(&mut crate::live::NodeView)) {
    app.live().update_node(id, name, "ethstats", now_ms(), f);
}

fn on_stats(app: &App, id: &str, name: &str, stats: Stats) {
    update(app, id, name, |node| {
        node.peers = stats.peers;
        node.mining = stats.mining;
        node.uptime_s = stats.uptime;
        node.gas_price = Some(
            stats
                .gas_price
                .map_or_else(|| crate::live::UNKNOWN.to_owned(), |wei| wei.to_string()),
        );
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_compare_whole() {
        assert!(
            constant_time_eq(b"ab", b"ab")
                && !constant_time_eq(b"ab", b"ac")
                && !constant_time_eq(b"a", b"ab")
        );
    }
}

#[cfg(test)]
mod session_tests {
    use std::collections::HashMap;
    use std::net::SocketAddr;

    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message as Ws;
    use tokio_util::sync::CancellationToken;

    use super::*;
    use crate::identity::Identity;
    use crate::live::Live;
    use crate::registry::Registry;
    use crate::store::Store;

    async fn serve() -> (Arc<App>, SocketAddr, CancellationToken, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let live = Live::unconfigured();
        let app = Arc::new(App::new(
            Registry::default(),
            live,
            Store::open(&dir.path().join("db"), 100).unwrap(),
            HashMap::from([("geth-1".to_owned(), "s3cret".to_owned())]),
            Identity::random(),
        ));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        tokio::spawn(crate::routes::serve(
            listener,
            app.clone(),
            shutdown.clone(),
        ));
        (app, addr, shutdown, dir)
    }

    type Client = tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >;

    async fn connect(addr: SocketAddr) -> Result<Client, tokio_tungstenite::tungstenite::Error> {
        let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/api")).await?;
        Ok(ws)
    }

    async fn next_text(ws: &mut Client) -> Option<String> {
        loop {
            match tokio::time::timeout(Duration::from_secs(5), ws.next()).await {
                Ok(Some(Ok(Ws::Text(t)))) => return Some(t.to_string()),
                Ok(Some(Ok(Ws::Close(_)))) | Ok(Some(Err(_))) | Ok(None) | Err(_) => return None,
                Ok(Some(Ok(_))) => {}
            }
        }
    }

    /// Logs in as geth-1 (the secret `serve` knows) and expects `ready`.
    async fn log_in(ws: &mut Client) {
        let hello = json!({"emit": ["hello", {"id": "geth-1", "secret": "s3cret",
            "info": {"name": "geth-1", "node": "Geth/v1.13.15"}}]});
        ws.send(Ws::Text(hello.to_string().into())).await.unwrap();
        assert_eq!(
            next_text(ws).await.as_deref(),
            Some(r#"{"emit":["ready"]}"#)
        );
    }

    #[tokio::test]
    async fn forged_ethstats_blocks_are_skipped_and_pings_wait_for_login() {
        let (app, addr, shutdown, _dir) = serve().await;
        let mut ws = connect(addr).await.unwrap();
        assert_eq!(app.logins.pending(), 1);
        // Before login a primus ping gets no answer.
        ws.send(Ws::Text("\"primus::ping::1\"".into()))
            .await
            .unwrap();
        log_in(&mut ws).await;
        assert_eq!(app.logins.pending(), 0, "a logged-in node frees its place");
        ws.send(Ws::Text("\"primus::ping::2\"".into()))
            .await
            .unwrap();
        assert_eq!(
            next_text(&mut ws).await.as_deref(),
            Some("\"primus::pong::2\"")
        );

        let now_s = now_ms() / 1000;
        let frame = |number: u64, timestamp: u64| {
            json!({"emit": ["block", {"block": {"number": number,
                "hash": format!("0x{:064x}", number % 1000 + 1), "parentHash": format!("0x{:064x}", 0),
                "timestamp": timestamp, "miner": "0x0000000000000000000000000000000000000001",
                "difficulty": "2", "gasUsed": 0, "gasLimit": 1, "transactions": []}}]})
            .to_string()
        };
        for forged in [frame(i64::MAX as u64, now_s), frame(3, now_s + 3600)] {
            ws.send(Ws::Text(forged.into())).await.unwrap();
        }
        ws.send(Ws::Text(frame(3, now_s).into())).await.unwrap();
        let id = "ethstats:geth-1".to_owned();
        let head = async {
            loop {
                if let Some(h) = app.live().nodes.get(&id).and_then(|n| n.head.clone()) {
                    return h;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        let head = tokio::time::timeout(Duration::from_secs(10), head)
            .await
            .unwrap();
        assert_eq!(head.number, 3, "only the honest block arrived");
        let metrics = app.metrics.encode(&app.live(), app.store.health());
        for reason in ["implausible_height", "future_timestamp"] {
            assert!(
                metrics.contains(&format!(
                    "clique_fleet_rejected_reports_total{{reason=\"{reason}\"}} 1"
                )),
                "{metrics}"
            );
        }
        shutdown.cancel();
    }

    /// Time is paused: it jumps to the next timer whenever both ends wait.
    #[tokio::test(start_paused = true)]
    async fn silence_is_measured_from_the_last_message_after_login() {
        let (_app, addr, shutdown, _dir) = serve().await;
        let mut ws = connect(addr).await.unwrap();
        log_in(&mut ws).await;
        // Past the login deadline and, in all, past the silence limit since
        // login: each message restarts the count.
        for n in 1..=2 {
            tokio::time::sleep(SILENCE_TIMEOUT * 3 / 4).await;
            ws.send(Ws::Text(format!("\"primus::ping::{n}\"").into()))
                .await
                .unwrap();
            assert_eq!(
                next_text(&mut ws).await,
                Some(format!("\"primus::pong::{n}\"")),
                "still open {n} pings in"
            );
        }
        let last_message = tokio::time::Instant::now();
        // Then silence: the server closes the connection.
        loop {
            match ws.next().await {
                Some(Ok(Ws::Text(t))) => panic!("unexpected {t}"),
                Some(Ok(Ws::Close(_))) | Some(Err(_)) | None => break,
                Some(Ok(_)) => {}
            }
        }
        let silent = last_message.elapsed();
        assert!(
            silent >= SILENCE_TIMEOUT && silent < SILENCE_TIMEOUT + Duration::from_secs(2),
            "closed after {silent:?} of silence"
        );
        shutdown.cancel();
    }

    #[tokio::test]
    async fn a_big_message_before_login_closes_and_pending_logins_are_bounded() {
        let (app, addr, shutdown, _dir) = serve().await;
        let mut big = connect(addr).await.unwrap();
        let _ = big.send(Ws::Text("x".repeat(64 * 1024).into())).await;
        assert_eq!(next_text(&mut big).await, None, "closed");
        let mut held = Vec::new();
        for _ in 0..crate::gate::PER_ADDRESS {
            held.push(connect(addr).await.unwrap());
        }
        match connect(addr).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(r)) => {
                assert_eq!(r.status().as_u16(), 429);
            }
            other => panic!(
                "a ninth pending login was admitted: {:?}",
                other.map(|_| ())
            ),
        }
        assert_eq!(app.logins.pending(), crate::gate::PER_ADDRESS);
        drop(held);
        let freed = async {
            while app.logins.pending() > 0 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(10), freed)
            .await
            .unwrap();
        shutdown.cancel();
    }
}
