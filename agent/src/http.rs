//! The agent's HTTP port (default 9101): `/livez`, `/readyz` (`?verbose` for
//! every condition as JSON), `/metrics` (Prometheus). Answers come from the
//! published node status and metrics; a request never waits on geth.

use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use std::sync::Arc;

use crate::metrics::Metrics;
use crate::readiness::{self, ReadinessConfig};
use crate::status::{now_ms, NodeStatus};

#[derive(Clone)]
pub struct HttpState {
    pub status: watch::Receiver<NodeStatus>,
    pub readiness: ReadinessConfig,
    pub metrics: Arc<Metrics>,
}

pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn metrics(State(state): State<HttpState>) -> Response {
    let text = state.metrics.encode();
    let content_type = (
        axum::http::header::CONTENT_TYPE,
        "text/plain; version=0.0.4; charset=utf-8",
    );
    ([content_type], text).into_response()
}

/// Serves until `cancel` fires.
pub async fn serve(
    listener: TcpListener,
    state: HttpState,
    cancel: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(cancel.cancelled_owned())
        .await
}

/// Alive while the supervisor runs, whatever geth does: a syncing, restarting
/// or blocked node must not be restarted by the platform.
async fn livez(State(state): State<HttpState>) -> Response {
    if state.status.has_changed().is_err() {
        return (StatusCode::SERVICE_UNAVAILABLE, "supervisor stopped\n").into_response();
    }
    let phase = state.status.borrow().phase;
    (
        StatusCode::OK,
        format!("ok: {}\n", format!("{phase:?}").to_lowercase()),
    )
        .into_response()
}

async fn readyz(State(state): State<HttpState>, RawQuery(query): RawQuery) -> Response {
    let status = state.status.borrow().clone();
    let result = readiness::evaluate(&status, &state.readiness, status.reference_head, now_ms());
    let code = if result.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let verbose = query.is_some_and(|q| {
        q.split('&')
            .any(|kv| kv == "verbose" || kv.starts_with("verbose="))
    });
    if verbose {
        return (code, Json(result)).into_response();
    }
    let text = if result.ready {
        "ready\n".to_owned()
    } else {
        let failing: Vec<String> = result
            .conditions
            .iter()
            .filter(|c| !c.ok)
            .map(|c| format!("{}: {} (want {})", c.name, c.value, c.want))
            .collect();
        format!("not ready: {}\n", failing.join("; "))
    };
    (code, text).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::{Mode, Phase};
    use axum::body::Body;
    use axum::http::Request;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    async fn get(router: Router, uri: &str) -> (StatusCode, String) {
        let response = router
            .oneshot(Request::get(uri).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let code = response.status();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (code, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn not_ready_until_geth_runs_and_peers() {
        let (tx, rx) = watch::channel(NodeStatus::new("n".into(), Mode::Spawn, 0));
        let state = HttpState {
            status: rx,
            readiness: ReadinessConfig::default(),
            metrics: Arc::new(Metrics::new(None)),
        };
        let (code, body) = get(router(state.clone()), "/metrics").await;
        assert_eq!(code, StatusCode::OK);
        assert!(body.contains("# TYPE clique_head_block gauge"), "{body}");
        let (code, body) = get(router(state.clone()), "/readyz").await;
        assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.contains("geth_running"), "{body}");
        assert_eq!(get(router(state.clone()), "/livez").await.0, StatusCode::OK);

        tx.send_modify(|s| {
            s.phase = Phase::Running;
            s.chain.head = Some(5);
            s.chain.peers = Some(1);
            s.chain.syncing = Some(false);
            s.chain.answered_at_ms = Some(now_ms());
        });
        let (code, body) = get(router(state.clone()), "/readyz").await;
        assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.contains("gas_price_floor: not applied"), "{body}");
        tx.send_modify(|s| s.gas_price_floor_wei = Some(0));
        assert_eq!(
            get(router(state.clone()), "/readyz").await,
            (StatusCode::OK, "ready\n".into())
        );
        let (code, body) = get(router(state.clone()), "/readyz?verbose").await;
        assert_eq!(code, StatusCode::OK);
        let json: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(json["ready"], true);
        assert!(json["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["name"] == "peers"));

        drop(tx);
        assert_eq!(
            get(router(state), "/livez").await.0,
            StatusCode::SERVICE_UNAVAILABLE
        );
    }
}
