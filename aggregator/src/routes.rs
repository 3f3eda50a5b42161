//! The HTTP routes and the server loop.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::state::{now_ms, App};
use crate::{ethstats, ingest, restarts, web};

pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/", get(web::index))
        .route("/app.js", get(web::script))
        .route("/style.css", get(web::style))
        .route("/livez", get(|| async { "ok\n" }))
        .route("/api/state", get(web::state))
        .route("/api/stream", get(web::stream))
        .route("/api/events", get(web::events))
        .route("/api/peers", get(ingest::peers))
        .route("/api/wallet", get(crate::gateway::wallet::params))
        .route("/api/report", post(ingest::report))
        .route("/api", get(ethstats::upgrade))
        .route("/metrics", get(web::metrics))
        .route(
            "/api/restarts",
            get(restarts::api::history).post(restarts::api::create),
        )
        .route("/api/restarts/latest", get(restarts::api::latest))
        .route("/api/restarts/latest/abort", post(restarts::api::abort))
        .route("/api/restarts/latest/resume", post(restarts::api::resume))
        .merge(crate::solidity::routes())
        .merge(crate::bridge_proxy::routes())
        .route(geth_wire::bundle::PATH, get(crate::bundle::serve))
        .route("/api/nodes", get(crate::signers::admission::list_route))
        .route(
            "/api/nodes/admit",
            post(crate::signers::admission::admit_route),
        )
        .route(
            "/api/nodes/remove",
            post(crate::signers::admission::remove_route),
        )
        .route("/api/signers", post(crate::signers::api::create))
        .route("/api/signers/latest", get(crate::signers::api::latest))
        .layer(DefaultBodyLimit::max(geth_wire::MAX_REPORT_BYTES))
        .with_state(app)
}

/// Serves until `shutdown` fires.
pub async fn serve(
    listener: TcpListener,
    app: Arc<App>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let ticker = {
        let app = app.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tick.tick() => {
                        let now = now_ms();
                        {
                            let mut live = app.live();
                            live.tick(now);
                            app.restarts.tick(&live, now);
                            app.signer_plans.tick(&live, now);
                        }
                        let progress = app.restarts.progress();
                        app.live().set_restart(progress);
                    }
                }
            }
        })
    };
    let flusher = tokio::spawn(crate::web::flush_stream(app.clone(), shutdown.clone()));
    let stopping = app.clone();
    // Live updates are small writes: without TCP_NODELAY one could wait for
    // the viewer's delayed ACK of the previous one (up to 40 ms on Linux).
    let listener = listener.tap_io(|stream| {
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY on a connection");
        }
    });
    let result = axum::serve(
        listener,
        router(app).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move {
        shutdown.cancelled().await;
        // Open dashboards would hold the graceful shutdown forever.
        stopping.live().close_stream();
    })
    .await;
    ticker.abort();
    flusher.abort();
    result
}
