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
use tokio::sync::broadcast::{self, error::RecvError, error::TryRecvError};
use tokio_stream::wrappers::IntervalStream;
use tokio_stream::{Stream, StreamExt};

use crate::live::sse_event;
use crate::state::App;

const INDEX: &str = include_str!("../web/index.html");
const SCRIPT: &str = include_str!("../web/app.js");
const STYLE: &str = include_str!("../web/style.css");
/// SSE comment line that keeps idle connections open.
const KEEP_ALIVE: &[u8] = b":\n\n";
/// Events already waiting for a viewer go out in one write, up to this many
/// bytes: under load a viewer costs a write per wake-up, not per event.
/// Nothing waits for more events to arrive but the tasks already runnable
/// (the sockets run with TCP_NODELAY: the kernel does not join writes).
const COALESCE_BYTES: usize = 64 * 1024;
/// How many times a viewer lets runnable tasks go first while they keep
/// adding changes to its next write.
const YIELDS_UNDER_LOAD: usize = 4;

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
/// the live view; a subscriber passes its bytes on, joined with the other
/// changes already waiting for it.
pub async fn stream(State(app): State<Arc<App>>) -> Response {
    let (first, updates) = app.live().subscribe();
    let changes = coalesced(updates, move || sse_event("state", &app.live().snapshot()));
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

/// The changes as they come, each write carrying every event that is
/// already waiting. A viewer that fell behind the channel gets a fresh
/// `snapshot` instead of what it missed (taken after dropping what is
/// queued, so no older change follows it).
fn coalesced<S>(
    updates: broadcast::Receiver<Bytes>,
    snapshot: S,
) -> impl Stream<Item = Result<Bytes, Infallible>>
where
    S: Fn() -> Bytes + Send + 'static,
{
    futures_util::stream::unfold((updates, snapshot), |(mut updates, snapshot)| async move {
        let resync = |updates: &mut broadcast::Receiver<Bytes>| {
            while !matches!(
                updates.try_recv(),
                Err(TryRecvError::Empty | TryRecvError::Closed)
            ) {}
            snapshot()
        };
        let mut ready = vec![match updates.recv().await {
            Ok(bytes) => bytes,
            Err(RecvError::Lagged(_)) => resync(&mut updates),
            Err(RecvError::Closed) => return None,
        }];
        // Let the tasks that are already runnable (reports read in the same
        // burst) publish first, and again while that brought more: under load
        // their changes join this write; when idle nothing else is runnable
        // and this returns at once.
        let mut size = ready[0].len();
        for _ in 0..YIELDS_UNDER_LOAD {
            tokio::task::yield_now().await;
            let before = ready.len();
            while size < COALESCE_BYTES {
                match updates.try_recv() {
                    Ok(bytes) => {
                        size += bytes.len();
                        ready.push(bytes);
                    }
                    Err(TryRecvError::Lagged(_)) => {
                        ready = vec![resync(&mut updates)];
                        size = ready[0].len();
                    }
                    Err(TryRecvError::Empty | TryRecvError::Closed) => break,
                }
            }
            if ready.len() == before || size >= COALESCE_BYTES {
                break;
            }
        }
        let out = match ready.len() {
            1 => ready.swap_remove(0),
            _ => Bytes::from(ready.concat()),
        };
        Some((Ok(out), (updates, snapshot)))
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    fn event(i: usize) -> Bytes {
        Bytes::from(format!("event: node\ndata: {i}\n\n"))
    }

    #[tokio::test]
    async fn waiting_events_go_out_in_one_write_in_order() {
        let (tx, rx) = broadcast::channel(16);
        let mut stream = Box::pin(coalesced(rx, || Bytes::from_static(b"snapshot")));
        for i in 0..3 {
            tx.send(event(i)).unwrap();
        }
        let first = stream.next().await.unwrap().unwrap();
        assert_eq!(first, [event(0), event(1), event(2)].concat());
        tx.send(event(3)).unwrap();
        let next = stream.next().await.unwrap().unwrap();
        assert_eq!(next, event(3), "nothing waits for more");
        drop(tx);
        assert!(stream.next().await.is_none(), "ends with the channel");
    }

    #[tokio::test]
    async fn a_viewer_behind_the_channel_gets_a_snapshot_and_no_older_change() {
        let (tx, rx) = broadcast::channel(4);
        let mut stream = Box::pin(coalesced(rx, || Bytes::from_static(b"snapshot")));
        for i in 0..10 {
            tx.send(event(i)).unwrap();
        }
        let first = stream.next().await.unwrap().unwrap();
        assert_eq!(first, Bytes::from_static(b"snapshot"));
        tx.send(event(10)).unwrap();
        let next = stream.next().await.unwrap().unwrap();
        assert_eq!(next, event(10), "only changes after the snapshot follow");
    }

    #[tokio::test]
    async fn one_write_stays_near_its_bound() {
        let (tx, rx) = broadcast::channel(1024);
        let mut stream = Box::pin(coalesced(rx, || Bytes::from_static(b"snapshot")));
        let big = Bytes::from(vec![b'x'; 16 * 1024]);
        for _ in 0..10 {
            tx.send(big.clone()).unwrap();
        }
        let first = stream.next().await.unwrap().unwrap();
        assert_eq!(first.len(), COALESCE_BYTES, "stops once over the bound");
        let sizes = [
            stream.next().await.unwrap().unwrap().len(),
            stream.next().await.unwrap().unwrap().len(),
        ];
        assert_eq!(sizes, [COALESCE_BYTES, 2 * 16 * 1024], "the rest follows");
    }
}
