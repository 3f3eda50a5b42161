//! Operator endpoints for rolling restarts (docs/API.md). Every one needs
//! `Authorization: Bearer <admin token>` (the token file given with
//! `--admin-token-file`); without a configured token they all answer 401.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;

use super::{Plan, PlanError, RestartError, Timeouts};
use crate::ingest::error;
use crate::state::{now_ms, App};

/// Plans listed by `GET /api/restarts`.
const HISTORY: usize = 20;

/// `POST /api/restarts`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateRequest {
    /// Node names or 1-based indexes of network.json, in restart order.
    #[serde(default)]
    pub order: Option<Vec<String>>,
    /// Non-signers first, then signers, the first node last.
    #[serde(default)]
    pub auto: bool,
    #[serde(default)]
    pub timeouts: Option<Timeouts>,
}

/// Compares without an early exit, so the time taken does not tell how much
/// of a guess was right.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A 401 unless the request carries the admin token.
pub fn unauthorized(app: &App, headers: &HeaderMap) -> Option<Response> {
    let Some(token) = app.admin_token.as_deref() else {
        return Some(error(
            StatusCode::UNAUTHORIZED,
            "operator endpoints are disabled: start the aggregator with --admin-token-file",
        ));
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match given {
        Some(given) if same(given.as_bytes(), token.as_bytes()) => None,
        _ => Some(error(
            StatusCode::UNAUTHORIZED,
            "missing or wrong admin token (Authorization: Bearer <token>)",
        )),
    }
}

fn refused(e: &RestartError) -> Response {
    let code = match e {
        RestartError::Plan(PlanError::Quorum(_)) => StatusCode::UNPROCESSABLE_ENTITY,
        RestartError::Plan(_) => StatusCode::BAD_REQUEST,
        RestartError::Busy(_) | RestartError::State { .. } => StatusCode::CONFLICT,
        RestartError::NoPlan => StatusCode::NOT_FOUND,
        RestartError::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
    };
    error(code, e.to_string())
}

fn plan_reply(code: StatusCode, plan: &Plan) -> Response {
    (code, Json(plan)).into_response()
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
                format!("not a restart request: {e}"),
            )
        }
    };
    let order = match (&request.order, request.auto) {
        (Some(_), true) => {
            return error(
                StatusCode::BAD_REQUEST,
                "give either order or auto, not both",
            )
        }
        (None, false) => return error(StatusCode::BAD_REQUEST, "give order or auto: true"),
        (order, _) => order.as_deref(),
    };
    match app.restarts.create(
        &app.live(),
        order,
        request.timeouts.unwrap_or_default(),
        now_ms(),
    ) {
        Ok(plan) => plan_reply(StatusCode::CREATED, &plan),
        Err(e) => refused(&e),
    }
}

pub async fn latest(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    if let Some(r) = unauthorized(&app, &headers) {
        return r;
    }
    match app.restarts.latest() {
        Some(plan) => plan_reply(StatusCode::OK, &plan),
        None => refused(&RestartError::NoPlan),
    }
}

pub async fn history(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    if let Some(r) = unauthorized(&app, &headers) {
        return r;
    }
    match app.store.restart_plans(HISTORY) {
        Ok(bodies) => {
            let plans: Vec<serde_json::Value> = bodies
                .iter()
                .filter_map(|b| serde_json::from_str(b).ok())
                .collect();
            Json(serde_json::json!({ "plans": plans })).into_response()
        }
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

pub async fn abort(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    if let Some(r) = unauthorized(&app, &headers) {
        return r;
    }
    match app.restarts.abort(now_ms()) {
        Ok(plan) => plan_reply(StatusCode::OK, &plan),
        Err(e) => refused(&e),
    }
}

pub async fn resume(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    if let Some(r) = unauthorized(&app, &headers) {
        return r;
    }
    match app.restarts.resume(now_ms()) {
        Ok(plan) => plan_reply(StatusCode::OK, &plan),
        Err(e) => refused(&e),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use axum::http::Request;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    use super::*;
    use crate::identity::Identity;
    use crate::live::Live;
    use crate::registry::Registry;
    use crate::restarts::{Member, Restarts};
    use crate::store::Store;

    async fn call(
        app: &Arc<App>,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: &str,
    ) -> (u16, serde_json::Value) {
        let mut request = Request::builder().method(method).uri(path);
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        let response = crate::routes::router(app.clone())
            .oneshot(
                request
                    .body(axum::body::Body::from(body.to_owned()))
                    .unwrap(),
            )
            .await
            .unwrap();
        let code = response.status().as_u16();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        (code, serde_json::from_slice(&bytes).unwrap_or_default())
    }

    #[tokio::test]
    async fn every_operator_endpoint_needs_the_admin_token() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db"), 100).unwrap();
        let members: Vec<Member> = (1..=2)
            .map(|i| Member {
                id: format!("0x{i:040x}"),
                name: format!("node-{i}"),
                signer: Some(format!("0x{:040x}", i + 100)),
            })
            .collect();
        let mut app = App::new(
            Registry::default(),
            Live::unconfigured(),
            store.clone(),
            HashMap::new(),
            Identity::random(),
        );
        app.restarts = Restarts::load(members, store).unwrap();
        let app = Arc::new(app);
        let endpoints = [
            ("POST", "/api/restarts", r#"{"auto":true}"#),
            ("GET", "/api/restarts", ""),
            ("GET", "/api/restarts/latest", ""),
            ("POST", "/api/restarts/latest/abort", ""),
            ("POST", "/api/restarts/latest/resume", ""),
        ];
        // No token configured: every endpoint is refused, even with a guess.
        for (method, path, body) in endpoints {
            let (code, reply) = call(&app, method, path, Some("guess"), body).await;
            assert_eq!(code, 401, "{method} {path}: {reply}");
            assert!(reply["error"]
                .as_str()
                .unwrap()
                .contains("--admin-token-file"));
        }
        let mut app = Arc::try_unwrap(app).ok().unwrap();
        app.admin_token = Some("s3cret-token-0123456789".into());
        let app = Arc::new(app);
        for (method, path, body) in endpoints {
            for token in [None, Some("wrong"), Some("s3cret-token-012345678")] {
                let (code, _) = call(&app, method, path, token, body).await;
                assert_eq!(code, 401, "{method} {path} with {token:?}");
            }
        }
        assert!(app.restarts.latest().is_none(), "nothing was planned");
        let token = Some("s3cret-token-0123456789");
        let (code, _) = call(&app, "GET", "/api/restarts/latest", token, "").await;
        assert_eq!(code, 404);
        let (code, reply) = call(&app, "POST", "/api/restarts", token, r#"{"order":["9"]}"#).await;
        assert_eq!(code, 400, "{reply}");
        let (code, _) = call(&app, "POST", "/api/restarts", token, r#"{"nope":1}"#).await;
        assert_eq!(code, 400);
        // Two signers: any signer restart breaks the quorum; refused with the reason.
        let (code, reply) = call(&app, "POST", "/api/restarts", token, r#"{"auto":true}"#).await;
        assert_eq!(code, 422, "{reply}");
        assert!(
            reply["error"]
                .as_str()
                .unwrap()
                .contains("below the clique quorum 2"),
            "{reply}"
        );
        assert!(app.restarts.latest().is_none());
        let (code, reply) = call(&app, "GET", "/api/restarts", token, "").await;
        assert_eq!(
            (code, reply["plans"].as_array().map(Vec::len)),
            (200, Some(0))
        );
    }

    #[test]
    fn tokens_compare_whole() {
        assert!(same(b"secret", b"secret"));
        assert!(!same(b"secret", b"secreT"));
        assert!(!same(b"secret", b"secret2"));
        assert!(!same(b"", b"x"));
    }
}
