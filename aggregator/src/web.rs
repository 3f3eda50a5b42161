//! The dashboard: embedded page and assets (works offline), a JSON snapshot,
//! a Server-Sent Events stream of changes, recent events, fleet metrics.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::State;
use axum::http::header;
use axum::response::{Html, IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use serde_json::{json, Value};
use tokio::sync::broadcast::{self, error::RecvError, error::TryRecvError};
use tokio_stream::{Stream, StreamExt};
use tokio_util::sync::CancellationToken;

use crate::idle::IdleTimer;
use crate::state::App;

const INDEX: &str = include_str!("../web/index.html");
const SCRIPT: &str = include_str!("../web/app.js");
const STYLE: &str = include_str!("../web/style.css");
/// SSE comment line that keeps idle connections open, sent after this long
/// without a change.
const KEEP_ALIVE: &[u8] = b":\n\n";
const KEEP_ALIVE_EVERY: Duration = Duration::from_secs(15);
/// Events already waiting for a viewer go out in one write, up to this many
/// bytes: a viewer costs a write per wake-up, not per event (the sockets
/// run with TCP_NODELAY: the kernel does not join writes). The live view's
/// fan-out joins the changes of a burst before they reach the viewers.
const COALESCE_BYTES: usize = 64 * 1024;

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
    let changes = coalesced(updates, move |updates| app.live().resync(updates));
    let stream = tokio_stream::once(Ok(first)).chain(changes);
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
/// already waiting, and a keep-alive comment after 15 s without one. A
/// viewer that fell behind the channel gets a fresh snapshot from `resync`
/// instead of what it missed (which empties the receiver first, so no older
/// change follows it). Ends when the channel closes (the server stops).
fn coalesced<S>(
    updates: broadcast::Receiver<Bytes>,
    resync: S,
) -> impl Stream<Item = Result<Bytes, Infallible>>
where
    S: Fn(&mut broadcast::Receiver<Bytes>) -> Bytes + Send + 'static,
{
    let viewer = Viewer {
        updates,
        resync,
        idle: IdleTimer::new(KEEP_ALIVE_EVERY),
    };
    futures_util::stream::unfold(viewer, |mut viewer| async move {
        let first = tokio::select! {
            biased;
            update = viewer.updates.recv() => match update {
                Ok(bytes) => bytes,
                Err(RecvError::Lagged(_)) => (viewer.resync)(&mut viewer.updates),
                Err(RecvError::Closed) => return None,
            },
            () = viewer.idle.expired() => {
                viewer.idle.touch();
                return Some((Ok(Bytes::from_static(KEEP_ALIVE)), viewer));
            }
        };
        viewer.idle.touch();
        // What else is already waiting joins this write.
        let mut size = first.len();
        let mut ready = vec![first];
        while size < COALESCE_BYTES {
            match viewer.updates.try_recv() {
                Ok(bytes) => {
                    size += bytes.len();
                    ready.push(bytes);
                }
                Err(TryRecvError::Lagged(_)) => {
                    ready = vec![(viewer.resync)(&mut viewer.updates)];
                    size = ready[0].len();
                }
                Err(TryRecvError::Empty | TryRecvError::Closed) => break,
            }
        }
        let out = match ready.len() {
            1 => ready.swap_remove(0),
            _ => Bytes::from(ready.concat()),
        };
        Some((Ok(out), viewer))
    })
}

/// One viewer's stream state (see [`coalesced`]).
struct Viewer<S> {
    updates: broadcast::Receiver<Bytes>,
    resync: S,
    /// A keep-alive is due after this long without a write.
    idle: IdleTimer,
}

/// Sends the changes the live view's fan-out held once they have waited
/// their window (see `live::fanout`), until `shutdown`. Sleeps only while
/// something is held.
pub async fn flush_stream(app: Arc<App>, shutdown: CancellationToken) {
    // Tokio's timer fires on whole milliseconds, up to one late: what is
    // due within the next one goes now, so nothing waits past its window.
    const TIMER_SLACK: Duration = Duration::from_millis(1);
    let changed = app.live().stream_deadline_changed();
    loop {
        let deadline = app.live().flush_stream_due(Instant::now() + TIMER_SLACK);
        let timer = async {
            match deadline {
                Some(at) => {
                    let early = at.checked_sub(TIMER_SLACK).unwrap_or(at);
                    tokio::time::sleep_until(early.into()).await
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = changed.notified() => {}
            _ = timer => {}
        }
    }
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
    use tokio_util::sync::CancellationToken;

    fn snapshot(rx: &mut broadcast::Receiver<Bytes>) -> Bytes {
        crate::live::fanout::drain(rx);
        Bytes::from_static(b"snapshot")
    }

    fn event(i: usize) -> Bytes {
        Bytes::from(format!("event: node\ndata: {i}\n\n"))
    }

    #[tokio::test]
    async fn waiting_events_go_out_in_one_write_in_order() {
        let (tx, rx) = broadcast::channel(16);
        let mut stream = Box::pin(coalesced(rx, snapshot));
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
        let mut stream = Box::pin(coalesced(rx, snapshot));
        for i in 0..10 {
            tx.send(event(i)).unwrap();
        }
        let first = stream.next().await.unwrap().unwrap();
        assert_eq!(first, Bytes::from_static(b"snapshot"));
        tx.send(event(10)).unwrap();
        let next = stream.next().await.unwrap().unwrap();
        assert_eq!(next, event(10), "only changes after the snapshot follow");
    }

    /// Time is paused: it jumps to the next timer when the test waits.
    #[tokio::test(start_paused = true)]
    async fn a_keep_alive_follows_each_quiet_spell_of_15_s() {
        let (tx, rx) = broadcast::channel(16);
        let mut stream = Box::pin(coalesced(rx, snapshot));
        let start = tokio::time::Instant::now();
        async fn next(
            stream: &mut (impl Stream<Item = Result<Bytes, Infallible>> + Unpin),
            start: tokio::time::Instant,
        ) -> (Bytes, Duration) {
            (stream.next().await.unwrap().unwrap(), start.elapsed())
        }
        tokio::time::sleep(Duration::from_secs(10)).await;
        tx.send(event(0)).unwrap();
        assert_eq!(
            next(&mut stream, start).await,
            (event(0), Duration::from_secs(10))
        );
        // Quiet from 10 s: the first keep-alive comes at 25 s, not at 15 s.
        let keep_alive = Bytes::from_static(KEEP_ALIVE);
        assert_eq!(
            next(&mut stream, start).await,
            (keep_alive.clone(), Duration::from_secs(25))
        );
        assert_eq!(
            next(&mut stream, start).await,
            (keep_alive, Duration::from_secs(40))
        );
        tx.send(event(1)).unwrap();
        assert_eq!(
            next(&mut stream, start).await,
            (event(1), Duration::from_secs(40))
        );
    }

    #[tokio::test]
    async fn one_write_stays_near_its_bound() {
        let (tx, rx) = broadcast::channel(1024);
        let mut stream = Box::pin(coalesced(rx, snapshot));
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

    /// Through the real server: changes reach an open stream in order, held
    /// ones too (by the flusher's timer when nothing follows them, and by a
    /// stopping server), and stopping the server ends the stream instead of
    /// waiting for the viewer to leave.
    #[tokio::test]
    async fn changes_reach_the_viewer_and_a_stopping_server_ends_the_stream() {
        let dir = tempfile::tempdir().unwrap();
        let mut live = crate::live::Live::unconfigured();
        live.set_stream_window(Duration::from_secs(1));
        let app = Arc::new(App::new(
            crate::registry::Registry::default(),
            live,
            crate::store::Store::open(&dir.path().join("db"), 100).unwrap(),
            Default::default(),
            crate::identity::Identity::random(),
        ));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let server = tokio::spawn(crate::routes::serve(
            listener,
            app.clone(),
            shutdown.clone(),
        ));
        let mut response = reqwest::get(format!("http://{addr}/api/stream"))
            .await
            .unwrap();
        let mut seen = String::new();
        let mut read_until = async |text: &str| {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
            while !seen.contains(text) {
                let chunk = tokio::time::timeout_at(deadline, response.chunk())
                    .await
                    .unwrap_or_else(|_| panic!("no {text:?} in {seen:?}"))
                    .unwrap()
                    .expect("the stream ended");
                seen.push_str(std::str::from_utf8(&chunk).unwrap());
            }
        };
        read_until("event: state\n").await;
        let stats = geth_wire::StatsReport::default();
        // n1 goes at once; n2 and n3 follow within the window: held, and
        // sent by the flusher when it ends, as nothing comes after them.
        for node in ["n1", "n2", "n3"] {
            app.live().on_stats(node, &stats, 1, None);
        }
        read_until(r#""id":"n3""#).await;
        let at = |seen: &str, node: &str| {
            seen.find(&format!(r#""id":"{node}""#))
                .unwrap_or_else(|| panic!("{node} missing from {seen:?}"))
        };
        assert!(at(&seen, "n1") < at(&seen, "n2") && at(&seen, "n2") < at(&seen, "n3"));
        // Held when the server stops: sent before the stream ends.
        for node in ["n4", "n5"] {
            app.live().on_stats(node, &stats, 1, None);
        }
        // A stopping server ends the open stream instead of waiting for it.
        shutdown.cancel();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while let Some(chunk) = tokio::time::timeout_at(deadline, response.chunk())
            .await
            .expect("the stream stays open after shutdown")
            .unwrap()
        {
            seen.push_str(std::str::from_utf8(&chunk).unwrap());
        }
        assert!(at(&seen, "n3") < at(&seen, "n4") && at(&seen, "n4") < at(&seen, "n5"));
        tokio::time::timeout_at(deadline, server)
            .await
            .expect("the server waits for the viewer")
            .unwrap()
            .unwrap();
    }
}
