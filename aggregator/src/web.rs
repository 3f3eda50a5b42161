//! The dashboard: embedded page and assets (works offline), a JSON snapshot,
//! a Server-Sent Events stream of changes, recent events, fleet metrics.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::header;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::{Stream, StreamExt};

use crate::app::App;
use crate::live::{Live, Update};

const INDEX: &str = include_str!("../web/index.html");
const SCRIPT: &str = include_str!("../web/app.js");
const STYLE: &str = include_str!("../web/style.css");

pub async fn index() -> Html<&'static str> {
    Html(INDEX)
}

pub async fn script() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        SCRIPT,
    )
        .into_response()
}

pub async fn style() -> Response {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], STYLE).into_response()
}

fn best_json(live: &Live) -> Value {
    live.best().map_or(Value::Null, |b| {
        json!({ "number": b.number, "hash": b.hash, "timestamp": b.timestamp, "signer": b.signer })
    })
}

/// The whole dashboard state.
pub fn snapshot(live: &Live) -> Value {
    json!({
        "network": live.network,
        "best": best_json(live),
        "avg_block_time": live.avg_block_time(),
        "gas_price": "0",
        "gas_limit": live.best().map(|b| b.gas_limit),
        "nodes": live.nodes.values().collect::<Vec<_>>(),
        "blocks": live.recent_blocks(100),
        "signers": live.signers(),
        "alarms": live.alarms,
    })
}

pub async fn state(State(app): State<Arc<App>>) -> Json<Value> {
    Json(snapshot(&app.live()))
}

fn event(name: &str, data: &Value) -> SseEvent {
    SseEvent::default().event(name).data(data.to_string())
}

/// `state` first, then only what changed.
pub async fn stream(
    State(app): State<Arc<App>>,
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    let (first, updates) = {
        let live = app.live();
        (snapshot(&live), live.updates.subscribe())
    };
    let changes = BroadcastStream::new(updates).map(move |update| {
        let live = app.live();
        Ok(match update {
            Ok(Update::Node(node)) => event("node", &json!(node)),
            Ok(Update::Block(block)) => event("block", &json!(block)),
            Ok(Update::Best) => event(
                "best",
                &json!({ "best": best_json(&live), "avg_block_time": live.avg_block_time() }),
            ),
            Ok(Update::Signers) => event("signers", &json!(live.signers())),
            Ok(Update::Alarms) => event("alarms", &json!(live.alarms)),
            // Fell behind: start over from a full snapshot.
            Err(BroadcastStreamRecvError::Lagged(_)) => event("state", &snapshot(&live)),
        })
    });
    let stream = tokio_stream::once(Ok(event("state", &first))).chain(changes);
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

/// Recent lifecycle events from all nodes, newest first.
pub async fn events(State(app): State<Arc<App>>) -> Response {
    match app.store.recent_events(500) {
        Ok(events) => {
            let entries: Vec<Value> = events
                .into_iter()
                .map(|(node, e)| {
                    let name = node
                        .parse()
                        .ok()
                        .and_then(|a| app.registry.get(&a))
                        .map_or(node.clone(), |n| n.name.clone());
                    json!({ "node": node, "name": name, "event": e })
                })
                .collect();
            Json(entries).into_response()
        }
        Err(e) => {
            crate::ingest::error(axum::http::StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
        }
    }
}

pub async fn metrics(State(app): State<Arc<App>>) -> Response {
    let text = app.metrics.encode(&app.live());
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}
