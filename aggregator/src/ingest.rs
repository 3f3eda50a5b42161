//! Agent reports (`POST /api/report`) and peer discovery (`GET /api/peers`),
//! both signed by the node's key (see `auth`). Errors: 400 malformed, 401 not a
//! known node, 413 too large — each with a reason in JSON.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use geth_wire::{BlockReport, PeerList, Report, ReportReply};

use crate::app::{now_ms, App};
use crate::auth::{self, AuthError};

/// Most events accepted in one report.
const MAX_EVENTS: usize = 1000;

pub fn error(code: StatusCode, reason: impl Into<String>) -> Response {
    (code, Json(serde_json::json!({ "error": reason.into() }))).into_response()
}

fn refuse(app: &App, e: AuthError) -> Response {
    match e {
        AuthError::Malformed(m) => {
            app.metrics.rejected("400");
            error(StatusCode::BAD_REQUEST, m)
        }
        AuthError::Unauthorized(m) => {
            app.metrics.rejected("401");
            error(StatusCode::UNAUTHORIZED, m)
        }
    }
}

fn check_block(b: &BlockReport) -> Result<(), String> {
    let is_hash = |h: &str| {
        h.len() == 66 && h.starts_with("0x") && h[2..].chars().all(|c| c.is_ascii_hexdigit())
    };
    if !is_hash(&b.hash) || !is_hash(&b.parent_hash) {
        return Err("block hashes must be 0x + 64 hex digits".into());
    }
    if let Some(s) = &b.signer {
        if s.len() != 42 || !s.starts_with("0x") || !s[2..].chars().all(|c| c.is_ascii_hexdigit()) {
            return Err("signer must be a 0x address".into());
        }
    }
    Ok(())
}

pub async fn report(State(app): State<Arc<App>>, headers: HeaderMap, body: Bytes) -> Response {
    let now = now_ms();
    let (address, node) = match auth::verify(&app.registry, &headers, &body, now) {
        Ok(found) => found,
        Err(e) => return refuse(&app, e),
    };
    let report: Report = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            app.metrics.rejected("400");
            return error(StatusCode::BAD_REQUEST, format!("not a report: {e}"));
        }
    };
    let id = format!("{address:#x}");
    let name = node.name.clone();
    let mut reply = ReportReply::default();
    match report {
        Report::Block(block) => {
            if let Err(reason) = check_block(&block) {
                app.metrics.rejected("400");
                return error(StatusCode::BAD_REQUEST, reason);
            }
            app.metrics.report("block");
            app.live().on_block(&id, &name, "agent", &block, now);
            app.store.sighting(&id, block);
        }
        Report::Stats(mut stats) => {
            app.metrics.report("stats");
            stats.name = name.clone();
            let latency = headers
                .get(geth_wire::HEADER_TIME)
                .and_then(|t| t.to_str().ok()?.parse::<u64>().ok())
                .map(|sent| now.saturating_sub(sent));
            app.live().on_stats(&id, &stats, now, latency);
            app.store.node(
                &id,
                &name,
                serde_json::to_string(&stats).unwrap_or_default(),
                now,
            );
        }
        Report::Events { events } => {
            if events.len() > MAX_EVENTS {
                app.metrics.rejected("413");
                return error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("at most {MAX_EVENTS} events per report"),
                );
            }
            app.metrics.report("events");
            let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
            if let Err(e) = app.store.events(&id, events).await {
                tracing::error!(error = %e, node = %name, "events not stored");
                return error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "events could not be stored; retry",
                );
            }
            reply.acked = seqs;
        }
    }
    reply.best_head = app.live().best().map(|b| b.number);
    Json(reply).into_response()
}

/// Live enodes for the calling node to peer with (all online nodes but itself).
pub async fn peers(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    let (address, _) = match auth::verify(&app.registry, &headers, b"", now_ms()) {
        Ok(found) => found,
        Err(e) => return refuse(&app, e),
    };
    let me = format!("{address:#x}");
    let live = app.live();
    let enodes = live
        .nodes
        .values()
        .filter(|n| n.online && n.id != me)
        .filter_map(|n| n.enode.clone())
        .collect();
    Json(PeerList { enodes }).into_response()
}
