//! Operator endpoints for signer changes (admin token): `POST /api/signers`
//! with `{"action": "add"|"remove", "node": "<name|address|enode>"}` starts
//! one (201 with the plan; 422 when it would break the quorum, 409 while
//! another runs), `GET /api/signers/latest` shows its progress.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;

use super::{Action, SignerError};
use crate::ingest::error;
use crate::restarts::api::unauthorized;
use crate::state::{now_ms, App};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateRequest {
    pub action: Action,
    pub node: String,
}

pub async fn create(State(app): State<Arc<App>>, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(r) = unauthorized(&app, &headers) {
        return r;
    }
    let request: CreateRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("expected {{\"action\": \"add\"|\"remove\", \"node\": \"…\"}}: {e}"),
            )
        }
    };
    let result = app
        .signer_plans
        .create(&app.live(), request.action, &request.node, now_ms());
    match result {
        Ok(plan) => (StatusCode::CREATED, Json(plan)).into_response(),
        Err(e) => {
            let code = match e {
                SignerError::Quorum(_) => StatusCode::UNPROCESSABLE_ENTITY,
                SignerError::Busy(_) => StatusCode::CONFLICT,
                SignerError::NoSet => StatusCode::SERVICE_UNAVAILABLE,
                SignerError::Target(_) => StatusCode::BAD_REQUEST,
            };
            error(code, e.to_string())
        }
    }
}

pub async fn latest(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    if let Some(r) = unauthorized(&app, &headers) {
        return r;
    }
    match app.signer_plans.latest() {
        Some(plan) => (StatusCode::OK, Json(plan)).into_response(),
        None => error(StatusCode::NOT_FOUND, "no signer change yet"),
    }
}
