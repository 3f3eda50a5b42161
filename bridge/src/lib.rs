//! Bridge signing service and client.
//!
//! The service runs as its own process (`geth-bridge serve`), apart from the
//! aggregator, so that a bug in the dashboard or the ingest cannot reach the
//! signing keys. See docs/BRIDGE.md.

pub mod client;
pub mod config;
pub mod contracts;
pub mod metrics;
pub mod routes;
pub mod service;
pub mod store;

use std::sync::Arc;

pub use config::Config;
pub use service::Service;

/// Serves the API on `listener` until `shutdown` resolves.
pub async fn serve(
    service: Service,
    rate_limit_per_minute: u32,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let state = Arc::new(routes::AppState {
        service,
        limiter: routes::RateLimiter::new(rate_limit_per_minute),
    });
    axum::serve(
        listener,
        routes::router(state).into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}
