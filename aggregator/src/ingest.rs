//! Agent reports (`POST /api/report`) and peer discovery (`GET /api/peers`),
//! both signed by the node's key or MAC'd under its session key (see `auth`),
//! with strictly increasing signed times per node. Every reply is sealed the
//! same way over the request's proof and the reply body: the aggregator's
//! signature (`identity`) or the session MAC. Refusals: 400 malformed or
//! implausible, 401 not a known node or no session, 409 replayed, 413 too
//! large — each with `{"error": reason, "reason": label}`, counted in
//! `clique_fleet_rejected_reports_total{reason}` and logged (rate-limited).
//!
//! A stats report's enode must carry the reporting node's own key (host and
//! port may change); otherwise the whole report is refused, so a node cannot
//! make others dial a key that is not its own.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use geth_wire::{EventKind, PeerList, Report, ReportReply, StatsReport};
use serde::Serialize;

use crate::auth::Proof;
use crate::refusals::{Reason, Refusal};
use crate::registry::enode_address;
use crate::state::{now_ms, App};
use crate::validate::{is_address, is_hash};

/// Most events accepted in one report.
const MAX_EVENTS: usize = 1000;
/// Most addresses accepted in a reported signer set.
const MAX_SIGNERS: usize = 256;

pub fn error(code: StatusCode, reason: impl Into<String>) -> Response {
    (
        code,
        axum::Json(serde_json::json!({ "error": reason.into() })),
    )
        .into_response()
}

/// A JSON reply, sealed (signed or MAC'd) when the request carried a proof.
fn signed_json(
    app: &App,
    proof: Option<&Proof>,
    code: StatusCode,
    value: &impl Serialize,
) -> Response {
    let body = serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec());
    let seal = proof.map(|p| p.seal(&app.identity, &body));
    let mut response = (code, body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Some((name, value)) = seal {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(name, value);
        }
    }
    response
}

fn refused(app: &App, proof: Option<&Proof>, node: &str, refusal: &Refusal) -> Response {
    app.note_refusal(node, refusal);
    let code = StatusCode::from_u16(refusal.reason.status()).unwrap_or(StatusCode::BAD_REQUEST);
    signed_json(
        app,
        proof,
        code,
        &serde_json::json!({ "error": refusal.message, "reason": refusal.reason.label() }),
    )
}

/// Who the request claims to be, for refusal logs before it is verified: a
/// node of the network by name, anything else as `unknown` (so unknown
/// claims cannot grow the rate limiter's table).
fn claimed(app: &App, headers: &HeaderMap) -> String {
    headers
        .get(geth_wire::HEADER_NODE)
        .and_then(|v| v.to_str().ok()?.parse().ok())
        .and_then(|a| app.registry.get(&a))
        .map_or_else(|| "unknown".to_owned(), |n| n.name)
}

/// A stats report's enode must be the node's own; its signer set addresses.
pub fn check_stats(s: &StatsReport, node: alloy::primitives::Address) -> Result<(), Refusal> {
    if let Some(enode) = &s.enode {
        let key = enode_address(enode).ok_or_else(|| {
            Refusal::new(
                Reason::BadEnode,
                "enode must be enode://<128 hex digits>@host:port",
            )
        })?;
        let port_ok = enode
            .split_once('@')
            .and_then(|(_, at)| at.rsplit_once(':'))
            .is_some_and(|(host, port)| {
                !host.is_empty()
                    && port
                        .split('?')
                        .next()
                        .is_some_and(|p| p.parse::<u16>().is_ok())
            });
        if !port_ok {
            return Err(Refusal::new(
                Reason::BadEnode,
                "enode must end in @host:port",
            ));
        }
        if key != node {
            return Err(Refusal::new(
                Reason::ForeignEnode,
                format!("enode key is {key:#x}'s, not this node's ({node:#x})"),
            ));
        }
    }
    if let Some(set) = &s.signers {
        if set.len() > MAX_SIGNERS || !set.iter().all(|a| is_address(a)) {
            return Err(Refusal::new(
                Reason::BadSignerSet,
                format!("signers must be at most {MAX_SIGNERS} 0x addresses"),
            ));
        }
    }
    if s.head_hash.as_deref().is_some_and(|h| !is_hash(h)) {
        return Err(Refusal::new(
            Reason::BadHash,
            "head_hash must be 0x + 64 hex digits",
        ));
    }
    Ok(())
}

pub async fn report(State(app): State<Arc<App>>, headers: HeaderMap, body: Body) -> Response {
    let claimed_proof = Proof::claimed(&headers);
    let sig = claimed_proof.as_ref();
    let body = match axum::body::to_bytes(body, geth_wire::MAX_REPORT_BYTES).await {
        Ok(b) => b,
        Err(_) => {
            let refusal = Refusal::new(
                Reason::TooLarge,
                format!("reports are at most {} bytes", geth_wire::MAX_REPORT_BYTES),
            );
            return refused(&app, sig, &claimed(&app, &headers), &refusal);
        }
    };
    let now = now_ms();
    let verified = match app.verifier().verify(&headers, &body, now) {
        Ok(v) => v,
        Err(r) => return refused(&app, sig, &claimed(&app, &headers), &r),
    };
    let sig = Some(&verified.proof);
    let address = verified.address;
    let name = verified.node.name.clone();
    if let Err(r) = app.replay.accept(address, verified.time_ms) {
        return refused(&app, sig, &name, &r);
    }
    let report: Report = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return refused(
                &app,
                sig,
                &name,
                &Refusal::new(Reason::Malformed, format!("not a report: {e}")),
            )
        }
    };
    let id = format!("{address:#x}");
    let mut reply = ReportReply::default();
    match report {
        Report::Block(mut block) => {
            crate::validate::normalise(&mut block);
            let sighted = {
                let mut live = app.live();
                if let Err(r) = live.check_block(&id, &block, now) {
                    drop(live);
                    return refused(&app, sig, &name, &r);
                }
                live.on_block(&id, &name, "agent", &block, now)
            };
            app.metrics.report("block");
            // Only what the live view kept: a node cannot grow the store with
            // endless branches or repeats.
            if sighted {
                app.restarts.on_sealed(
                    block.signer.as_deref(),
                    block.timestamp.saturating_mul(1000),
                );
                app.store.sighting(&id, block);
            }
        }
        Report::Stats(mut stats) => {
            if let Err(r) = check_stats(&stats, address) {
                return refused(&app, sig, &name, &r);
            }
            app.metrics.report("stats");
            stats.name = name.clone();
            let latency = now.saturating_sub(verified.time_ms);
            app.live().on_stats(&id, &stats, now, Some(latency));
            app.store.node(
                &id,
                &name,
                serde_json::to_string(&stats).unwrap_or_default(),
                now,
            );
        }
        Report::Events { events } => {
            if events.len() > MAX_EVENTS {
                let r = Refusal::new(
                    Reason::TooLarge,
                    format!("at most {MAX_EVENTS} events per report"),
                );
                return refused(&app, sig, &name, &r);
            }
            app.metrics.report("events");
            let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
            let for_restarts = events.clone();
            if let Err(e) = app.store.events(&id, events).await {
                // A failing store logs for itself, once a minute.
                if !app.store.health().failing {
                    tracing::error!(error = %e, node = %name, "events not stored");
                }
                return signed_json(
                    &app,
                    sig,
                    StatusCode::SERVICE_UNAVAILABLE,
                    &serde_json::json!({ "error": "events could not be stored; retry" }),
                );
            }
            // Before the ack: a restart step moved by these events is stored.
            let mut live = app.live();
            for event in &for_restarts {
                if let EventKind::Shutdown { verdict } = &event.kind {
                    live.on_shutdown(&id, verdict);
                    tracing::info!(
                        node = %name,
                        clean = verdict.clean,
                        seq = event.seq,
                        "shutdown verdict received"
                    );
                }
            }
            app.restarts.on_events(&live, &id, &for_restarts, now);
            app.signer_plans.on_events(&for_restarts, now);
            reply.acked = seqs;
        }
    }
    {
        let live = app.live();
        reply.reference = live.reference();
        reply.fleet_head = live.highest_signer_head();
    }
    // A step moved by this report goes on at once (not at the next second's
    // tick), and a command it produced for this node rides on this reply.
    app.restarts.tick(&app.live(), now);
    reply.commands = app.restarts.commands_for(&id);
    app.signer_plans.tick(&app.live(), now);
    reply
        .commands
        .extend(app.signer_plans.commands_for(&id, now));
    signed_json(&app, sig, StatusCode::OK, &reply)
}

/// Live enodes for the calling node to peer with (all online nodes but itself).
pub async fn peers(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    let claimed_proof = Proof::claimed(&headers);
    let verified = match app.verifier().verify(&headers, b"", now_ms()) {
        Ok(v) => v,
        Err(r) => return refused(&app, claimed_proof.as_ref(), &claimed(&app, &headers), &r),
    };
    let sig = Some(&verified.proof);
    if let Err(r) = app.replay.accept(verified.address, verified.time_ms) {
        return refused(&app, sig, &verified.node.name, &r);
    }
    let me = format!("{:#x}", verified.address);
    let enodes = {
        let live = app.live();
        live.nodes
            .values()
            .filter(|n| n.online && n.id != me)
            .filter_map(|n| n.enode.clone())
            .collect()
    };
    signed_json(&app, sig, StatusCode::OK, &PeerList { enodes })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicU64, Ordering};

    use alloy::primitives::{keccak256, Signature};
    use alloy::signers::local::PrivateKeySigner;
    use alloy::signers::SignerSync;
    use axum::http::Request;
    use geth_wire::session::{SessionKey, HEADER_MAC, HEADER_REPLY_MAC};
    use geth_wire::{
        signing_payload, HEADER_NODE, HEADER_REPLY_SIGNATURE, HEADER_SIGNATURE, HEADER_TIME,
    };
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    use super::*;
    use crate::identity::Identity;
    use crate::live::Live;
    use crate::registry::{KnownNode, Registry};
    use crate::store::Store;

    struct Fixture {
        app: Arc<App>,
        a: PrivateKeySigner,
        b: PrivateKeySigner,
        _dir: tempfile::TempDir,
    }

    fn enode_of(key: &PrivateKeySigner, at: &str) -> String {
        let point = key.credential().verifying_key().to_encoded_point(false);
        format!("enode://{}@{at}", hex::encode(&point.as_bytes()[1..]))
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
                    enode: enode_of(key, "127.0.0.1:30303"),
                    signer: None,
                },
            );
        }
        let live = Live::unconfigured();
        let app = Arc::new(App::new(
            registry,
            live,
            Store::open(&dir.path().join("db"), 100).unwrap(),
            HashMap::new(),
            Identity::random(),
        ));
        Fixture {
            app,
            a,
            b,
            _dir: dir,
        }
    }

    /// Strictly increasing request times, as an agent sends them.
    fn next_time() -> u64 {
        static LAST: AtomicU64 = AtomicU64::new(0);
        let now = now_ms();
        let prev = LAST.fetch_max(now, Ordering::SeqCst);
        if prev >= now {
            LAST.fetch_add(1, Ordering::SeqCst) + 1
        } else {
            now
        }
    }

    /// A request to `path` from `claim` at `time`, proven by `proof` (a
    /// header name and value).
    fn proven(
        claim: &str,
        path: &str,
        body: &[u8],
        time: u64,
        proof: (&str, String),
    ) -> Request<Body> {
        let builder = if path == "/api/peers" {
            Request::get(path)
        } else {
            Request::post(path)
        };
        builder
            .header(HEADER_NODE, claim)
            .header(HEADER_TIME, time.to_string())
            .header(proof.0, proof.1)
            .body(Body::from(body.to_vec()))
            .unwrap()
    }

    fn signed_at(
        key: &PrivateKeySigner,
        claim: &str,
        path: &str,
        body: &[u8],
        time: u64,
    ) -> Request<Body> {
        let sig = key
            .sign_hash_sync(&keccak256(signing_payload(time, body)))
            .unwrap();
        let signature = format!("0x{}", hex::encode(sig.as_bytes()));
        proven(claim, path, body, time, (HEADER_SIGNATURE, signature))
    }

    fn signed(key: &PrivateKeySigner, claim: &str, body: &[u8]) -> Request<Body> {
        signed_at(key, claim, "/api/report", body, next_time())
    }

    async fn send_full(app: &Arc<App>, request: Request<Body>) -> (StatusCode, HeaderMap, String) {
        let response = crate::routes::router(app.clone())
            .oneshot(request)
            .await
            .unwrap();
        let code = response.status();
        let headers = response.headers().clone();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (code, headers, String::from_utf8_lossy(&body).into_owned())
    }

    async fn send(app: &Arc<App>, request: Request<Body>) -> (StatusCode, String) {
        let (code, _, body) = send_full(app, request).await;
        (code, body)
    }

    fn rejected(app: &App, reason: &str) -> u64 {
        let text = app.metrics.encode(&app.live(), app.store.health());
        let line = format!("clique_fleet_rejected_reports_total{{reason=\"{reason}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&line))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
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
        assert_eq!(rejected(&f.app, "unknown_node"), 1);
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
        assert!(
            body.contains("hashes") && body.contains("bad_hash"),
            "{body}"
        );

        let huge = vec![b' '; geth_wire::MAX_REPORT_BYTES + 1];
        let (code, _) = send(&f.app, signed(&f.a, &a, &huge)).await;
        assert_eq!(code, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(rejected(&f.app, "too_large"), 1);

        // A good report still goes through afterwards.
        assert_eq!(
            send(&f.app, signed(&f.a, &a, STATS)).await.0,
            StatusCode::OK
        );
    }

    fn block_json(number: u64, timestamp: u64) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({"type": "block", "number": number,
            "hash": format!("0x{:064x}", number.wrapping_add(7)), "parent_hash": format!("0x{:064x}", number.wrapping_add(6)),
            "timestamp": timestamp, "signer": null, "difficulty": 2, "transactions": 0,
            "gas_used": 0, "gas_limit": 1, "seen_at_ms": 1}))
        .unwrap()
    }

    #[tokio::test]
    async fn forged_blocks_are_refused_and_counted_and_never_shown() {
        let f = fixture().await;
        let a = format!("{:#x}", f.a.address());
        let now_s = now_ms() / 1000;
        for (body, reason) in [
            (block_json(i64::MAX as u64, now_s), "implausible_height"),
            (block_json(u64::MAX, now_s), "number_overflow"),
            (block_json(5, now_s + 3600), "future_timestamp"),
        ] {
            let (code, reply) = send(&f.app, signed(&f.a, &a, &body)).await;
            assert_eq!(code, StatusCode::BAD_REQUEST, "{reply}");
            assert!(reply.contains(reason), "{reply}");
            assert_eq!(rejected(&f.app, reason), 1, "{reason}");
        }
        {
            let live = f.app.live();
            assert!(live.nodes.get(&a).and_then(|n| n.head.as_ref()).is_none());
            assert_eq!(live.snapshot()["blocks"], serde_json::json!([]));
        }
        // An honest block goes through.
        let (code, reply) = send(&f.app, signed(&f.a, &a, &block_json(5, now_s))).await;
        assert_eq!(code, StatusCode::OK, "{reply}");
    }

    #[tokio::test]
    async fn a_replayed_request_is_refused() {
        let f = fixture().await;
        let a = format!("{:#x}", f.a.address());
        let time = next_time();
        let (code, _) = send(&f.app, signed_at(&f.a, &a, "/api/report", STATS, time)).await;
        assert_eq!(code, StatusCode::OK);
        let (code, body) = send(&f.app, signed_at(&f.a, &a, "/api/report", STATS, time)).await;
        assert_eq!(code, StatusCode::CONFLICT, "{body}");
        assert!(body.contains("replay"), "{body}");
        // Peer requests share the node's clock: an older one is refused too.
        let (code, _) = send(&f.app, signed_at(&f.a, &a, "/api/peers", b"", time - 1)).await;
        assert_eq!(code, StatusCode::CONFLICT);
        let (code, _) = send(&f.app, signed_at(&f.a, &a, "/api/peers", b"", next_time())).await;
        assert_eq!(code, StatusCode::OK);
        assert_eq!(rejected(&f.app, "replay"), 2);
    }

    #[tokio::test]
    async fn a_foreign_enode_is_refused_and_never_handed_out() {
        let f = fixture().await;
        let (a, b) = (
            format!("{:#x}", f.a.address()),
            format!("{:#x}", f.b.address()),
        );
        let stats = |enode: String| {
            serde_json::to_vec(&serde_json::json!({"type": "stats", "name": "x", "enode": enode}))
                .unwrap()
        };
        // a claims b's key (and a stranger's): refused.
        for enode in [
            enode_of(&f.b, "10.0.0.9:30303"),
            enode_of(&PrivateKeySigner::random(), "10.0.0.9:30303"),
        ] {
            let (code, body) = send(&f.app, signed(&f.a, &a, &stats(enode))).await;
            assert_eq!(code, StatusCode::BAD_REQUEST, "{body}");
            assert!(body.contains("foreign_enode"), "{body}");
        }
        let (code, _) = send(&f.app, signed(&f.a, &a, &stats("enode://zz@h:1".into()))).await;
        assert_eq!(code, StatusCode::BAD_REQUEST);
        let (_, body) = send(&f.app, signed_at(&f.b, &b, "/api/peers", b"", next_time())).await;
        assert_eq!(body, r#"{"enodes":[]}"#);
        // Its own key at a new address is fine and handed to b.
        let own = enode_of(&f.a, "10.0.0.7:30304");
        let (code, _) = send(&f.app, signed(&f.a, &a, &stats(own.clone()))).await;
        assert_eq!(code, StatusCode::OK);
        let (_, body) = send(&f.app, signed_at(&f.b, &b, "/api/peers", b"", next_time())).await;
        assert_eq!(body, format!(r#"{{"enodes":["{own}"]}}"#));
        assert_eq!(rejected(&f.app, "foreign_enode"), 2);
    }

    #[tokio::test]
    async fn replies_are_signed_and_bound_to_the_request() {
        let f = fixture().await;
        let a = format!("{:#x}", f.a.address());
        for request in [
            signed(&f.a, &a, STATS),
            signed(&f.a, &a, b"{not json"),
            signed_at(&f.a, &a, "/api/peers", b"", next_time()),
        ] {
            let request_sig = request.headers()[HEADER_SIGNATURE]
                .to_str()
                .unwrap()
                .to_owned();
            let (_, headers, body) = send_full(&f.app, request).await;
            let reply: Signature = headers[HEADER_REPLY_SIGNATURE]
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            let digest = keccak256(geth_wire::reply_signing_payload(
                &request_sig,
                body.as_bytes(),
            ));
            assert_eq!(
                reply.recover_address_from_prehash(&digest).unwrap(),
                f.app.identity.address(),
                "{body}"
            );
        }
        // No request signature, nothing to bind to: no reply signature.
        let (_, headers, _) = send_full(
            &f.app,
            Request::post("/api/report")
                .body(Body::from(STATS))
                .unwrap(),
        )
        .await;
        assert!(headers.get(HEADER_REPLY_SIGNATURE).is_none());
    }

    fn maced_at(
        key: &SessionKey,
        claim: &str,
        path: &str,
        body: &[u8],
        time: u64,
    ) -> Request<Body> {
        proven(
            claim,
            path,
            body,
            time,
            (HEADER_MAC, key.request_mac(time, body)),
        )
    }

    /// A reply checked as geth-agent checks it; the aggregator's public key.
    fn checked_as_an_agent(
        app: &App,
        request_sig: &str,
        headers: &HeaderMap,
        body: &str,
    ) -> Result<geth_wire::session::PublicKey, geth_agent::report::ReplyRejected> {
        let seal = headers
            .get(HEADER_REPLY_SIGNATURE)
            .and_then(|v| v.to_str().ok());
        geth_agent::report::verify_reply(app.identity.address(), request_sig, seal, body.as_bytes())
    }

    /// The session key as an agent derives it: from the aggregator's public
    /// key recovered from a signed reply.
    async fn open_session(app: &Arc<App>, key: &PrivateKeySigner) -> SessionKey {
        let claim = format!("{:#x}", key.address());
        let request = signed(key, &claim, STATS);
        let request_sig = request.headers()[HEADER_SIGNATURE]
            .to_str()
            .unwrap()
            .to_owned();
        let (code, headers, body) = send_full(app, request).await;
        assert_eq!(code, StatusCode::OK, "{body}");
        let aggregator = checked_as_an_agent(app, &request_sig, &headers, &body).unwrap();
        SessionKey::derive(key.credential().as_nonzero_scalar(), &aggregator)
    }

    #[tokio::test]
    async fn after_one_signed_request_a_node_macs_and_is_answered_in_kind() {
        let f = fixture().await;
        let a = format!("{:#x}", f.a.address());
        let b = format!("{:#x}", f.b.address());
        // A MAC before any signature: the node is told to sign.
        let guess = SessionKey::derive(
            f.a.credential().as_nonzero_scalar(),
            &f.b.credential().verifying_key().into(),
        );
        let (code, headers, body) = send_full(
            &f.app,
            maced_at(&guess, &a, "/api/report", STATS, next_time()),
        )
        .await;
        assert_eq!(code, StatusCode::UNAUTHORIZED, "{body}");
        assert!(body.contains(r#""reason":"no_session""#), "{body}");
        assert!(headers.get(HEADER_REPLY_MAC).is_none());
        assert_eq!(rejected(&f.app, "no_session"), 1);

        let key = open_session(&f.app, &f.a).await;
        assert_eq!(f.app.sessions.count(), 1);
        for (path, body) in [("/api/report", STATS), ("/api/peers", b"" as &[u8])] {
            let request = maced_at(&key, &a, path, body, next_time());
            let mac = request.headers()[HEADER_MAC].to_str().unwrap().to_owned();
            let (code, headers, reply) = send_full(&f.app, request).await;
            assert_eq!(code, StatusCode::OK, "{path}: {reply}");
            let seal = headers[HEADER_REPLY_MAC].to_str().unwrap();
            assert!(key.verify_reply(&mac, reply.as_bytes(), seal), "{path}");
            assert!(headers.get(HEADER_REPLY_SIGNATURE).is_none());
        }

        // Replayed: refused by its time, like a signature.
        let time = next_time();
        let (code, _) = send(&f.app, maced_at(&key, &a, "/api/report", STATS, time)).await;
        assert_eq!(code, StatusCode::OK);
        let (code, body) = send(&f.app, maced_at(&key, &a, "/api/report", STATS, time)).await;
        assert_eq!(code, StatusCode::CONFLICT, "{body}");

        // Another body under the MAC of this one, or a forged MAC: refused,
        // and the refusal carries no MAC (nothing to learn from it).
        let mut tampered = maced_at(&key, &a, "/api/report", STATS, next_time());
        *tampered.body_mut() = Body::from(r#"{"type":"stats","name":"x","peers":99}"#);
        let (code, headers, body) = send_full(&f.app, tampered).await;
        assert_eq!(code, StatusCode::UNAUTHORIZED);
        assert!(body.contains("does not verify"), "{body}");
        assert!(headers.get(HEADER_REPLY_MAC).is_none());
        let mut forged = maced_at(&key, &a, "/api/report", STATS, next_time());
        forged.headers_mut().insert(
            HEADER_MAC,
            format!("0x{}", "ab".repeat(32)).parse().unwrap(),
        );
        let (code, _) = send(&f.app, forged).await;
        assert_eq!(code, StatusCode::UNAUTHORIZED);

        // a's session key does not speak for b, with or without b's session.
        let (_, body) = send(
            &f.app,
            maced_at(&key, &b, "/api/report", STATS, next_time()),
        )
        .await;
        assert!(body.contains("no_session"), "{body}");
        open_session(&f.app, &f.b).await;
        let (code, body) = send(
            &f.app,
            maced_at(&key, &b, "/api/report", STATS, next_time()),
        )
        .await;
        assert_eq!(code, StatusCode::UNAUTHORIZED);
        assert!(body.contains("does not verify"), "{body}");

        // Both proofs at once: ambiguous, refused.
        let mut both = signed(&f.a, &a, STATS);
        both.headers_mut()
            .insert(HEADER_MAC, key.request_mac(1, STATS).parse().unwrap());
        let (code, body) = send(&f.app, both).await;
        assert_eq!(code, StatusCode::BAD_REQUEST, "{body}");
        assert!(body.contains("not both"), "{body}");
        assert_eq!(f.app.sessions.count(), 2, "one per node");
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

    #[tokio::test]
    async fn commands_ride_on_the_target_nodes_signed_replies_until_the_outcome_is_stored() {
        use crate::restarts::{Member, Restarts, Timeouts};
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (PrivateKeySigner::random(), PrivateKeySigner::random());
        let mut registry = Registry::default();
        let mut members = Vec::new();
        for (key, name) in [(&a, "node-a"), (&b, "node-b")] {
            registry.insert(
                key.address(),
                KnownNode {
                    name: name.into(),
                    enode: enode_of(key, "127.0.0.1:30303"),
                    signer: None,
                },
            );
            members.push(Member {
                id: format!("{:#x}", key.address()),
                name: name.into(),
                signer: None,
            });
        }
        let store = Store::open(&dir.path().join("db"), 100).unwrap();
        let mut app = App::new(
            registry,
            Live::unconfigured(),
            store.clone(),
            HashMap::new(),
            Identity::random(),
        );
        app.restarts = Restarts::load(members, store.clone()).unwrap();
        let app = Arc::new(app);
        let (ida, idb) = (format!("{:#x}", a.address()), format!("{:#x}", b.address()));
        let ready = br#"{"type":"stats","name":"x","ready":true,"head":5}"#;
        for (key, id) in [(&a, &ida), (&b, &idb)] {
            let (code, body) = send(&app, signed(key, id, ready)).await;
            assert_eq!(code, StatusCode::OK, "{body}");
        }
        let order = ["node-a".to_owned()];
        app.restarts
            .create(&app.live(), Some(&order), Timeouts::default(), now_ms())
            .unwrap();
        app.restarts.tick(&app.live(), now_ms());

        // node-a's reply carries the command, signed for that request; node-b's not.
        let request = signed(&a, &ida, ready);
        let request_sig = request.headers()[HEADER_SIGNATURE]
            .to_str()
            .unwrap()
            .to_owned();
        let (code, headers, body) = send_full(&app, request).await;
        assert_eq!(code, StatusCode::OK, "{body}");
        let reply: ReportReply = serde_json::from_str(&body).unwrap();
        assert_eq!(reply.commands.len(), 1, "{body}");
        let command = &reply.commands[0];
        assert_eq!(
            (command.id.as_str(), command.node.as_str()),
            ("restart-1-1-1", ida.as_str())
        );
        assert!(command.expires_ms > now_ms());
        checked_as_an_agent(&app, &request_sig, &headers, &body)
            .expect("signed by the aggregator for this request");
        let (_, body) = send(&app, signed(&b, &idb, ready)).await;
        let reply: ReportReply = serde_json::from_str(&body).unwrap();
        assert!(reply.commands.is_empty(), "{body}");

        // The outcome moves the step (stored before the ack); the command stops.
        let events = format!(
            r#"{{"type":"events","events":[{{"spool":"s","seq":1,"at_ms":{},"kind":{{"kind":"command","id":"restart-1-1-1","command":"restart","outcome":{{"outcome":"restarting","verdict":{{"clean":true,"reason":"saved","exit_code":0,"killed":false,"duration_ms":5,"at":1}}}}}}}}]}}"#,
            now_ms()
        );
        let (code, body) = send(&app, signed(&a, &ida, events.as_bytes())).await;
        assert_eq!(code, StatusCode::OK, "{body}");
        let reply: ReportReply = serde_json::from_str(&body).unwrap();
        assert_eq!(reply.acked, vec![1]);
        assert!(reply.commands.is_empty(), "{body}");
        let stored = store.latest_restart_plan().unwrap().unwrap();
        assert!(stored.contains(r#""phase":"returning""#), "{stored}");
    }
}
