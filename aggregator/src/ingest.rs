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
    reply.reference = app.live().best().map(|b| geth_wire::BlockRef {
        number: b.number,
        hash: b.hash.clone(),
    });
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

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Mutex;

    use alloy::primitives::keccak256;
    use alloy::signers::local::PrivateKeySigner;
    use alloy::signers::SignerSync;
    use axum::body::Body;
    use axum::http::Request;
    use geth_wire::{signing_payload, HEADER_NODE, HEADER_SIGNATURE, HEADER_TIME};
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    use super::*;
    use crate::live::{Live, NetworkInfo};
    use crate::registry::{KnownNode, Registry};
    use crate::store::Store;

    struct Fixture {
        app: Arc<App>,
        a: PrivateKeySigner,
        b: PrivateKeySigner,
        _dir: tempfile::TempDir,
    }

    async fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (PrivateKeySigner::random(), PrivateKeySigner::random());
        let mut registry = Registry::default();
        for (key, name) in [(&a, "node-a"), (&b, "node-b")] {
            registry.insert(
                key.address(),
                KnownNode {
                    name: name.into(),
                    enode: String::new(),
                    signer: None,
                },
            );
        }
        let live = Live::new(
            NetworkInfo {
                name: "t".into(),
                chain_id: None,
                period: 1,
            },
            vec![],
            10,
        );
        let app = Arc::new(App {
            registry,
            live: Mutex::new(live),
            store: Store::open(&dir.path().join("db"), 100).unwrap(),
            ethstats_secrets: HashMap::new(),
            metrics: crate::fleet::FleetMetrics::default(),
        });
        Fixture {
            app,
            a,
            b,
            _dir: dir,
        }
    }

    fn signed(key: &PrivateKeySigner, claim: &str, body: &[u8]) -> Request<Body> {
        let time = now_ms();
        let sig = key
            .sign_hash_sync(&keccak256(signing_payload(time, body)))
            .unwrap();
        Request::post("/api/report")
            .header(HEADER_NODE, claim)
            .header(HEADER_TIME, time.to_string())
            .header(
                HEADER_SIGNATURE,
                format!("0x{}", hex::encode(sig.as_bytes())),
            )
            .body(Body::from(body.to_vec()))
            .unwrap()
    }

    async fn send(app: &Arc<App>, request: Request<Body>) -> (StatusCode, String) {
        let response = crate::app::router(app.clone())
            .oneshot(request)
            .await
            .unwrap();
        let code = response.status();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (code, String::from_utf8_lossy(&body).into_owned())
    }

    const STATS: &[u8] = br#"{"type":"stats","name":"whatever","peers":2}"#;

    #[tokio::test]
    async fn a_node_reports_as_itself_only() {
        let f = fixture().await;
        let a = format!("{:#x}", f.a.address());
        let (code, body) = send(&f.app, signed(&f.a, &a, STATS)).await;
        assert_eq!(code, StatusCode::OK, "{body}");
        assert_eq!(
            f.app.live().nodes[&a].name,
            "node-a",
            "the registry names the node"
        );

        let b = format!("{:#x}", f.b.address());
        let (code, body) = send(&f.app, signed(&f.a, &b, STATS)).await;
        assert_eq!(code, StatusCode::UNAUTHORIZED);
        assert!(body.contains("not by"), "{body}");

        let stranger = PrivateKeySigner::random();
        let (code, body) = send(
            &f.app,
            signed(&stranger, &format!("{:#x}", stranger.address()), STATS),
        )
        .await;
        assert_eq!(code, StatusCode::UNAUTHORIZED);
        assert!(body.contains("not part of this network"), "{body}");
    }

    #[tokio::test]
    async fn malformed_unauthenticated_and_oversized_requests_get_reasons() {
        let f = fixture().await;
        let a = format!("{:#x}", f.a.address());
        let (code, body) = send(
            &f.app,
            Request::post("/api/report")
                .body(Body::from(STATS))
                .unwrap(),
        )
        .await;
        assert_eq!(code, StatusCode::UNAUTHORIZED);
        assert!(body.contains("missing header"), "{body}");

        let mut request = signed(&f.a, &a, STATS);
        request
            .headers_mut()
            .insert(HEADER_TIME, "yesterday".parse().unwrap());
        let (code, body) = send(&f.app, request).await;
        assert_eq!(code, StatusCode::BAD_REQUEST);
        assert!(body.contains("milliseconds"), "{body}");

        let (code, body) = send(&f.app, signed(&f.a, &a, b"{not json")).await;
        assert_eq!(code, StatusCode::BAD_REQUEST);
        assert!(body.contains("not a report"), "{body}");

        let bad_block = br#"{"type":"block","number":1,"hash":"0x12","parent_hash":"0x1","timestamp":1,"signer":null,"difficulty":2,"transactions":0,"gas_used":0,"gas_limit":1,"seen_at_ms":1}"#;
        let (code, body) = send(&f.app, signed(&f.a, &a, bad_block)).await;
        assert_eq!(code, StatusCode::BAD_REQUEST);
        assert!(body.contains("hashes"), "{body}");

        let huge = vec![b' '; geth_wire::MAX_REPORT_BYTES + 1];
        let (code, _) = send(&f.app, signed(&f.a, &a, &huge)).await;
        assert_eq!(code, StatusCode::PAYLOAD_TOO_LARGE);

        // A good report still goes through afterwards.
        assert_eq!(
            send(&f.app, signed(&f.a, &a, STATS)).await.0,
            StatusCode::OK
        );
    }

    #[tokio::test]
    async fn events_are_acknowledged_after_they_are_stored() {
        let f = fixture().await;
        let a = format!("{:#x}", f.a.address());
        let body = br#"{"type":"events","events":[{"seq":3,"at_ms":1,"kind":{"kind":"blocked","reason":"x"}}]}"#;
        for _ in 0..2 {
            let (code, reply) = send(&f.app, signed(&f.a, &a, body)).await;
            assert_eq!(code, StatusCode::OK, "{reply}");
            assert!(reply.contains(r#""acked":[3]"#), "{reply}");
        }
        assert_eq!(
            f.app.store.event_count(&a, 3).unwrap(),
            1,
            "stored exactly once"
        );
    }
}
