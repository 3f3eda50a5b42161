//! The dashboard: embedded page and assets (works offline), a JSON snapshot,
//! a Server-Sent Events stream of changes, recent events, fleet metrics.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::header;
use axum::response::{Html, IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use serde_json::{json, Value};
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use tokio_stream::wrappers::{BroadcastStream, IntervalStream};
use tokio_stream::StreamExt;

use crate::live::sse_event;
use crate::state::App;

const INDEX: &str = include_str!("../web/index.html");
const SCRIPT: &str = include_str!("../web/app.js");
const STYLE: &str = include_str!("../web/style.css");
/// SSE comment line that keeps idle connections open.
const KEEP_ALIVE: &[u8] = b":\n\n";

pub async fn index(State(app): State<Arc<App>>) -> Html<std::borrow::Cow<'static, str>> {
    Html(crate::bridge_proxy::dashboard_page(
        INDEX,
        app.bridge.is_some(),
    ))
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

pub async fn state(State(app): State<Arc<App>>) -> Json<Value> {
    Json(app.live().snapshot())
}

/// `state` first, then only what changed. Every change is rendered once by
/// the live view; subscribers only copy a reference to its bytes.
pub async fn stream(State(app): State<Arc<App>>) -> Response {
    let (first, updates) = app.live().subscribe();
    let changes = BroadcastStream::new(updates).map(move |update| {
        Ok::<Bytes, Infallible>(match update {
            Ok(bytes) => bytes,
            // Fell behind: start over from a full snapshot.
            Err(BroadcastStreamRecvError::Lagged(_)) => sse_event("state", &app.live().snapshot()),
        })
    });
    let keep_alive = IntervalStream::new(tokio::time::interval_at(
        tokio::time::Instant::now() + Duration::from_secs(15),
        Duration::from_secs(15),
    ))
    .map(|_| Ok(Bytes::from_static(KEEP_ALIVE)));
    let stream = tokio_stream::once(Ok(first)).chain(changes.merge(keep_alive));
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(stream),
    )
        .into_response()
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
                        .map_or(node.clone(), |n| n.name);
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
    let health = app.store.health();
    app.metrics.restart(app.restarts.latest().as_ref());
    let mut text = app.metrics.encode(&app.live(), health);
    text.push_str(&app.gateway.encode());
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}
