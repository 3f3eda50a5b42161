//! HTTP API of the signing service (JSON in, JSON out; errors as
//! `{"status": "rejected", "reason": …}`).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::rejection::JsonRejection;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;

use alloy::primitives::Bytes;
use alloy::sol_types::SolCall;

use crate::contracts::IBridge;
use crate::service::{Outcome, Rejection, Service, SignRequest};

/// Fixed one-minute window per client address.
pub struct RateLimiter {
    per_minute: u32,
    windows: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

impl RateLimiter {
    pub fn new(per_minute: u32) -> Self {
        Self {
            per_minute,
            windows: Mutex::new(HashMap::new()),
        }
    }

    pub fn allow(&self, client: IpAddr, now: Instant) -> bool {
        let mut windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        if windows.len() > 10_000 {
            windows.retain(|_, (start, _)| now.duration_since(*start) < Duration::from_secs(60));
        }
        let entry = windows.entry(client).or_insert((now, 0));
        if now.duration_since(entry.0) >= Duration::from_secs(60) {
            *entry = (now, 0);
        }
        entry.1 += 1;
        entry.1 <= self.per_minute
    }
}

pub struct AppState {
    pub service: Service,
    pub limiter: RateLimiter,
}

pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/bridge/v1/directions", get(directions))
        .route("/bridge/v1/{direction}/sign", post(sign))
        .route("/bridge/", get(page))
        .route("/bridge/app.js", get(script))
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .with_state(state)
}

async fn directions(State(state): State<Arc<AppState>>) -> Response {
    Json(state.service.describe()).into_response()
}

/// The bridge page: static, no server-side state (see docs/BRIDGE.md).
pub const PAGE: &str = include_str!("../web/index.html");
pub const SCRIPT: &str = include_str!("../web/app.js");

async fn page() -> Response {
    axum::response::Html(PAGE).into_response()
}

async fn script() -> Response {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/javascript; charset=utf-8",
        )],
        SCRIPT,
    )
        .into_response()
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    state.service.metrics.render().into_response()
}

fn rejected(status: StatusCode, reason: &str) -> Response {
    (
        status,
        Json(json!({"status": "rejected", "reason": reason})),
    )
        .into_response()
}

async fn sign(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(direction): Path<String>,
    body: Result<Json<SignRequest>, JsonRejection>,
) -> Response {
    if !state.limiter.allow(peer.ip(), Instant::now()) {
        state
            .service
            .metrics
            .rejections
            .with_label_values(&["any", Rejection::RateLimited.label()])
            .inc();
        return rejected(
            StatusCode::TOO_MANY_REQUESTS,
            &Rejection::RateLimited.to_string(),
        );
    }
    let Json(request) = match body {
        Ok(b) => b,
        Err(e) => return rejected(StatusCode::BAD_REQUEST, &e.body_text()),
    };
    match state
        .service
        .sign(&direction, &request, &peer.ip().to_string())
        .await
    {
        Ok(Outcome::Signed(signed)) => {
            let mut body = serde_json::to_value(&*signed).unwrap_or_default();
            body["status"] = json!("signed");
            // For a wallet: the destination's claim call with this signature.
            body["claim_calldata"] = json!(Bytes::from(
                IBridge::claimCall {
                    c: signed.claim.clone(),
                    signatures: vec![signed.signature.clone()],
                }
                .abi_encode()
            ));
            (StatusCode::OK, Json(body)).into_response()
        }
        Ok(Outcome::Pending {
            confirmations,
            required,
        }) => (
            StatusCode::ACCEPTED,
            Json(json!({
                "status": "pending",
                "reason": format!("pending {confirmations}/{required}"),
                "confirmations": confirmations,
                "required": required,
            })),
        )
            .into_response(),
        Err(r) => rejected(status_of(&r), &r.to_string()),
    }
}

fn status_of(r: &Rejection) -> StatusCode {
    match r {
        Rejection::UnknownDirection | Rejection::UnknownTransaction => StatusCode::NOT_FOUND,
        Rejection::RateLimited => StatusCode::TOO_MANY_REQUESTS,
        Rejection::SourceUnavailable | Rejection::WrongChain => StatusCode::SERVICE_UNAVAILABLE,
        Rejection::Reorged | Rejection::AlreadyClaimed | Rejection::Incident => {
            StatusCode::CONFLICT
        }
        Rejection::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        Rejection::Reverted
        | Rejection::NoDeposit
        | Rejection::AmbiguousDeposit
        | Rejection::MalformedDeposit
        | Rejection::WrongDestination
        | Rejection::AssetNotMoved => StatusCode::UNPROCESSABLE_ENTITY,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_script_uses_the_contract_selectors() {
        use alloy::sol_types::SolCall;
        let deposit = format!("\"0x{}\"", hex::encode(IBridge::depositCall::SELECTOR));
        let balance = format!("\"0x{}\"", hex::encode(IBridge::balanceOfCall::SELECTOR));
        assert!(SCRIPT.contains(&deposit), "{deposit}");
        assert!(SCRIPT.contains(&balance), "{balance}");
    }

    #[test]
    fn rate_limit_is_per_client_and_per_minute() {
        let limiter = RateLimiter::new(2);
        let t0 = Instant::now();
        let a: IpAddr = [127, 0, 0, 1].into();
        let b: IpAddr = [127, 0, 0, 2].into();
        assert!(limiter.allow(a, t0));
        assert!(limiter.allow(a, t0));
        assert!(!limiter.allow(a, t0 + Duration::from_secs(1)));
        assert!(limiter.allow(b, t0));
        assert!(limiter.allow(a, t0 + Duration::from_secs(61)));
    }
}
