//! The aggregator's shared state and its HTTP routes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;

use crate::fleet::FleetMetrics;
use crate::live::Live;
use crate::registry::Registry;
use crate::store::Store;
use crate::{ethstats, ingest, web};

pub struct App {
    pub registry: Registry,
    pub live: Mutex<Live>,
    pub store: Store,
    /// geth `--ethstats name:secret@…` credentials, one per node name.
    pub ethstats_secrets: HashMap<String, String>,
    pub metrics: FleetMetrics,
}

impl App {
    pub fn live(&self) -> MutexGuard<'_, Live> {
        self.live.lock().unwrap_or_else(|e| e.into_inner())
    }
}

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
        .route("/api/report", post(ingest::report))
        .route("/api", get(ethstats::upgrade))
        .route("/metrics", get(web::metrics))
        .layer(DefaultBodyLimit::max(geth_wire::MAX_REPORT_BYTES))
        .with_state(app)
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}
