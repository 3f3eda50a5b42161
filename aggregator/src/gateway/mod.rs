//! The public JSON-RPC gateway: the aggregator's second listener, HTTPS
//! (rustls) at `/` and WebSocket at the same URL, so a wallet's "RPC URL" is
//! just `https://host:port`. Calls go only to the non-signer nodes that their
//! agents report online and ready, spread over them; reads are retried once on
//! another node. A method allow-list, an `eth_getLogs` range bound, body,
//! batch and per-client rate limits answer with JSON-RPC errors naming the
//! rule. Zero gas: while every ready node enforces a gas price floor of F
//! wei, `eth_gasPrice` and `eth_maxPriorityFeePerGas` answer F (geth itself
//! cannot advise less than 1 wei), so a wallet signs transactions that cost
//! nothing on a zero-floor network.

pub mod limit;
pub mod metrics;
pub mod policy;
pub mod upstream;
pub mod wallet;
mod ws;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use geth_wire::network::Network;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::state::App;
use limit::RateLimiter;
use policy::{code, Kind};
use upstream::{Rotation, Snapshot, Upstream};

/// Response header naming the node that answered (for operators and tests).
pub const HEADER_NODE: &str = "x-gateway-node";

/// Gateway options of `geth-aggregator` (all `--gateway-*`).
#[derive(Debug, Clone, clap::Args)]
pub struct GatewayArgs {
    /// Serve the JSON-RPC gateway over HTTPS (and WebSocket) on this address;
    /// needs --gateway-cert and --gateway-key. Off without it.
    #[arg(
        long = "gateway-listen",
        env = "GETH_AGGREGATOR_GATEWAY_LISTEN",
        value_name = "IP:PORT"
    )]
    pub gateway_listen: Option<SocketAddr>,
    /// PEM certificate chain of the gateway (leaf first).
    #[arg(
        long = "gateway-cert",
        env = "GETH_AGGREGATOR_GATEWAY_CERT",
        value_name = "PEM"
    )]
    pub gateway_cert: Option<PathBuf>,
    /// PEM private key of the certificate.
    #[arg(
        long = "gateway-key",
        env = "GETH_AGGREGATOR_GATEWAY_KEY",
        value_name = "PEM"
    )]
    pub gateway_key: Option<PathBuf>,
    /// Web origins (https://app.example) whose pages may call the gateway;
    /// repeat or comma-separate; `*` allows every origin. None: no cross-origin
    /// calls from browsers.
    #[arg(
        long = "gateway-cors-origin",
        env = "GETH_AGGREGATOR_GATEWAY_CORS_ORIGINS",
        value_delimiter = ',',
        value_name = "ORIGIN"
    )]
    pub gateway_cors_origins: Vec<String>,
    /// Largest request body, bytes.
    #[arg(long = "gateway-max-body-bytes", env = "GETH_AGGREGATOR_GATEWAY_MAX_BODY_BYTES", default_value_t = 512 * 1024)]
    pub gateway_max_body_bytes: usize,
    /// Most calls in one batch.
    #[arg(
        long = "gateway-max-batch",
        env = "GETH_AGGREGATOR_GATEWAY_MAX_BATCH",
        default_value_t = 100
    )]
    pub gateway_max_batch: usize,
    /// Calls per second per client IP (0: no limit).
    #[arg(
        long = "gateway-rate",
        env = "GETH_AGGREGATOR_GATEWAY_RATE",
        default_value_t = 100
    )]
    pub gateway_rate: u32,
    /// Calls a client may make at once before the rate applies.
    #[arg(
        long = "gateway-burst",
        env = "GETH_AGGREGATOR_GATEWAY_BURST",
        default_value_t = 200
    )]
    pub gateway_burst: u32,
    /// Open WebSocket connections per client IP.
    #[arg(
        long = "gateway-max-ws-per-client",
        env = "GETH_AGGREGATOR_GATEWAY_MAX_WS_PER_CLIENT",
        default_value_t = 16
    )]
    pub gateway_max_ws_per_client: usize,
    /// Widest `eth_getLogs` block range.
    #[arg(
        long = "gateway-max-log-blocks",
        env = "GETH_AGGREGATOR_GATEWAY_MAX_LOG_BLOCKS",
        default_value_t = 10_000
    )]
    pub gateway_max_log_blocks: u64,
    /// The gateway's URL as wallets reach it (shown on the dashboard's "Add to
    /// MetaMask"); default: https://<gateway-listen>.
    #[arg(
        long = "gateway-public-url",
        env = "GETH_AGGREGATOR_GATEWAY_PUBLIC_URL",
        value_name = "URL"
    )]
    pub gateway_public_url: Option<String>,
    /// Currency symbol wallets show for the chain's coin.
    #[arg(
        long = "gateway-currency",
        env = "GETH_AGGREGATOR_GATEWAY_CURRENCY",
        default_value = "ETH"
    )]
    pub gateway_currency: String,
}

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("{0}")]
    Config(String),
    #[error("gateway TLS {path}: {source}")]
    Tls {
        path: String,
        source: std::io::Error,
    },
    #[error("gateway cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// The gateway's shared state.
pub struct Gateway {
    app: Arc<App>,
    upstreams: Vec<Arc<Upstream>>,
    rotation: Rotation,
    limiter: RateLimiter,
    sockets: limit::Connections,
    client: upstream::Client,
    max_body_bytes: usize,
    max_batch: usize,
    max_log_blocks: u64,
    cors_origins: Vec<String>,
    /// The ready nodes, recomputed at most every [`SNAPSHOT_TTL`] so calls
    /// do not contend for the live view.
    cache: std::sync::Mutex<Option<(Instant, Snapshot)>>,
}

/// How long the gateway reuses its view of the ready nodes (a node that
/// fails in between costs a retry on another node, not a failed read).
const SNAPSHOT_TTL: Duration = Duration::from_millis(200);

/// An answer: built here, or a node's bytes passed on as they are.
enum Answer {
    Json(Value),
    Raw(Bytes),
}

/// One call of a request, as decided before any node is asked.
enum Slot {
    /// The answer is known (refusal, local answer).
    Done(Value),
    /// Ask a node.
    Forward { call: Value, kind: Kind },
}

impl Gateway {
    /// The gateway for `network`'s non-signer nodes.
    pub fn new(
        app: Arc<App>,
        network: &Network,
        args: &GatewayArgs,
    ) -> Result<Arc<Self>, GatewayError> {
        if args.gateway_max_batch == 0 || args.gateway_max_body_bytes < 1024 {
            return Err(GatewayError::Config(
                "--gateway-max-batch must be at least 1 and --gateway-max-body-bytes at least 1024"
                    .into(),
            ));
        }
        for origin in &args.gateway_cors_origins {
            if origin != "*" && HeaderValue::from_str(origin).is_err() {
                return Err(GatewayError::Config(format!(
                    "--gateway-cors-origin {origin:?} is not a valid origin"
                )));
            }
        }
        let client = upstream::client();
        Ok(Arc::new(Self {
            app,
            upstreams: upstream::from_network(network),
            rotation: Rotation::default(),
            limiter: RateLimiter::new(args.gateway_rate, args.gateway_burst),
            sockets: limit::Connections::new(args.gateway_max_ws_per_client),
            client,
            max_body_bytes: args.gateway_max_body_bytes,
            max_batch: args.gateway_max_batch,
            max_log_blocks: args.gateway_max_log_blocks,
            cors_origins: args.gateway_cors_origins.clone(),
            cache: std::sync::Mutex::new(None),
        }))
    }

    fn snapshot(&self) -> Snapshot {
        let now = Instant::now();
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        let fresh = match &*cache {
            Some((at, snap)) if now.duration_since(*at) < SNAPSHOT_TTL => snap.clone(),
            _ => {
                let snap = upstream::eligible(&self.upstreams, &self.app.live());
                *cache = Some((now, snap.clone()));
                snap
            }
        };
        drop(cache);
        self.rotation.turn(fresh)
    }

    /// Routes of the gateway: POST (JSON-RPC), GET (WebSocket upgrade) and
    /// CORS preflights at `/`.
    pub fn router(self: &Arc<Self>) -> Router {
        let router = Router::new()
            .route("/", get(upgrade).post(post))
            .with_state(self.clone());
        if self.cors_origins.is_empty() {
            return router;
        }
        let allow = if self.cors_origins.iter().any(|o| o == "*") {
            AllowOrigin::any()
        } else {
            AllowOrigin::list(
                self.cors_origins
                    .iter()
                    .filter_map(|o| HeaderValue::from_str(o).ok()),
            )
        };
        router.layer(
            CorsLayer::new()
                .allow_origin(allow)
                .allow_methods([Method::POST, Method::GET])
                .allow_headers([header::CONTENT_TYPE])
                .max_age(Duration::from_secs(600)),
        )
    }

    fn chain(&self, snap: &Snapshot) -> policy::Chain {
        policy::Chain {
            max_log_blocks: self.max_log_blocks,
            head: snap.head,
        }
    }

    /// Decides on one call: refused, answered here, or for a node.
    fn decide(&self, call: Value, snap: &Snapshot, http: bool) -> (Slot, String, bool) {
        let id = call.get("id").cloned().unwrap_or(Value::Null);
        let Some(method) = call
            .get("method")
            .and_then(Value::as_str)
            .map(str::to_owned)
        else {
            let slot = Slot::Done(error(
                id,
                code::INVALID_REQUEST,
                "not a JSON-RPC call: no method",
            ));
            return (slot, "invalid".into(), false);
        };
        let params = call.get("params").cloned().unwrap_or(Value::Null);
        match policy::check(&method, &params, self.chain(snap)) {
            Err(r) => (Slot::Done(error(id, r.code, &r.message)), method, false),
            Ok(Kind::Subscription) if http => {
                let message = format!(
                    "{method} needs the WebSocket endpoint (wss:// at the same URL) \
                     (gateway rule: subscriptions)"
                );
                (
                    Slot::Done(error(id, code::METHOD_NOT_ALLOWED, &message)),
                    method,
                    true,
                )
            }
            Ok(kind) => {
                let local = match (method.as_str(), snap.floor_wei) {
                    ("eth_gasPrice" | "eth_maxPriorityFeePerGas", Some(floor)) => {
                        Some(json!({"jsonrpc": "2.0", "id": id, "result": format!("{floor:#x}")}))
                    }
                    _ => None,
                };
                match local {
                    Some(answer) => (Slot::Done(answer), method, true),
                    None => (Slot::Forward { call, kind }, method, true),
                }
            }
        }
    }

    /// Sends `body` to the first node of `snap`, and to the next one when the
    /// first failed and a retry is safe. Returns the answer and the node.
    async fn forward(
        &self,
        snap: &Snapshot,
        body: Bytes,
        reads_only: bool,
    ) -> Result<(Bytes, String), String> {
        let mut last = "no ready non-signer node".to_owned();
        for up in snap.nodes.iter().take(2) {
            match upstream::post(&self.client, up, body.clone()).await {
                Ok(answer) => return Ok((answer, up.name.clone())),
                Err(failure) => {
                    self.app.gateway.upstream_failure(&up.name);
                    tracing::warn!(node = %up.name, "gateway: node failed: {}", failure.reason);
                    last = format!("node {} failed: {}", up.name, failure.reason);
                    if failure.maybe_sent && !reads_only {
                        break;
                    }
                }
            }
        }
        Err(last)
    }

    /// Answers a parsed request (one call or a batch) from `client`.
    async fn handle(
        &self,
        request: Value,
        original: Option<&Bytes>,
        client: IpAddr,
        http: bool,
    ) -> (StatusCode, Answer, Option<String>) {
        let (calls, batch) = match request {
            Value::Array(calls) if calls.is_empty() => {
                let answer = error(Value::Null, code::INVALID_REQUEST, "empty batch");
                return (StatusCode::OK, Answer::Json(answer), None);
            }
            Value::Array(calls) => (calls, true),
            call @ Value::Object(_) => (vec![call], false),
            _ => {
                let answer = error(
                    Value::Null,
                    code::INVALID_REQUEST,
                    "not a JSON-RPC call or batch",
                );
                return (StatusCode::OK, Answer::Json(answer), None);
            }
        };
        if calls.len() > self.max_batch {
            self.app.gateway.call("batch", true, "limited");
            let message = format!(
                "batch of {} calls refused: at most {} per batch (gateway rule: batch-size)",
                calls.len(),
                self.max_batch
            );
            let answer = error(Value::Null, code::LIMIT, &message);
            return (StatusCode::PAYLOAD_TOO_LARGE, Answer::Json(answer), None);
        }
        if !self.limiter.take(client, calls.len(), Instant::now()) {
            let message = "too many calls from this client: slow down (gateway rule: rate-limit)";
            let answers: Vec<Value> = calls
                .iter()
                .map(|c| {
                    let method = c.get("method").and_then(Value::as_str).unwrap_or("invalid");
                    self.app
                        .gateway
                        .call(method, policy::is_known(method), "limited");
                    error(
                        c.get("id").cloned().unwrap_or(Value::Null),
                        code::LIMIT,
                        message,
                    )
                })
                .collect();
            let body = if batch {
                Value::Array(answers)
            } else {
                answers.into_iter().next().unwrap_or(Value::Null)
            };
            return (StatusCode::TOO_MANY_REQUESTS, Answer::Json(body), None);
        }
        let snap = self.snapshot();
        let mut slots = Vec::with_capacity(calls.len());
        let mut methods = Vec::with_capacity(calls.len());
        for call in calls {
            let (slot, method, allowed) = self.decide(call, &snap, http);
            if let Slot::Done(answer) = &slot {
                let outcome = if answer.get("error").is_some() {
                    "refused"
                } else {
                    "ok"
                };
                self.app.gateway.call(&method, allowed, outcome);
            }
            slots.push(slot);
            methods.push((method, allowed));
        }
        // One call for a node: its bytes go as they are and the node's answer
        // comes back as it is (no re-encoding on the common path).
        if let (false, Some(original), [Slot::Forward { kind, .. }], [(method, allowed)]) =
            (batch, original, slots.as_slice(), methods.as_slice())
        {
            if method != "eth_feeHistory" {
                return match self
                    .forward(&snap, original.clone(), *kind == Kind::Read)
                    .await
                {
                    Ok((bytes, name)) => {
                        let failed = bytes.windows(8).any(|w| w == b"\"error\":");
                        let outcome = if failed { "error" } else { "ok" };
                        self.app.gateway.call(method, *allowed, outcome);
                        (StatusCode::OK, Answer::Raw(bytes), Some(name))
                    }
                    Err(reason) => {
                        tracing::warn!("gateway: unavailable: {reason}");
                        self.app.gateway.call(method, *allowed, "unavailable");
                        let id = match &slots[0] {
                            Slot::Forward { call, .. } => {
                                call.get("id").cloned().unwrap_or(Value::Null)
                            }
                            Slot::Done(_) => Value::Null,
                        };
                        let answer = error(
                            id,
                            code::UNAVAILABLE,
                            "no ready node answered; try again (gateway rule: ready-nodes)",
                        );
                        (StatusCode::OK, Answer::Json(answer), None)
                    }
                };
            }
        }
        // The calls for a node go in one request; ids are replaced by their
        // position so answers map back whatever ids the client chose.
        let mut forward = Vec::new();
        let mut reads_only = true;
        for (i, slot) in slots.iter().enumerate() {
            if let Slot::Forward { call, kind } = slot {
                let mut call = call.clone();
                call["id"] = json!(i);
                call["jsonrpc"] = json!("2.0");
                forward.push(call);
                reads_only &= *kind == Kind::Read;
            }
        }
        let mut node = None;
        let mut answers: Vec<Option<Value>> = vec![None; slots.len()];
        if !forward.is_empty() {
            let body = Bytes::from(Value::Array(forward).to_string());
            match self.forward(&snap, body, reads_only).await {
                Ok((bytes, name)) => {
                    node = Some(name);
                    if let Ok(Value::Array(items)) = serde_json::from_slice::<Value>(&bytes) {
                        for item in items {
                            if let Some(i) =
                                item.get("id").and_then(Value::as_u64).map(|i| i as usize)
                            {
                                if i < answers.len() {
                                    answers[i] = Some(item);
                                }
                            }
                        }
                    }
                }
                Err(reason) => tracing::warn!("gateway: unavailable: {reason}"),
            }
        }
        let mut out = Vec::with_capacity(slots.len());
        for ((slot, answer), (method, allowed)) in slots.into_iter().zip(answers).zip(methods) {
            match slot {
                Slot::Done(v) => out.push(v),
                Slot::Forward { call, .. } => {
                    let id = call.get("id").cloned().unwrap_or(Value::Null);
                    let v = match answer {
                        Some(mut v) => {
                            v["id"] = id;
                            if method == "eth_feeHistory" {
                                zero_rewards(&mut v, snap.floor_wei);
                            }
                            let outcome = if v.get("error").is_some() {
                                "error"
                            } else {
                                "ok"
                            };
                            self.app.gateway.call(&method, allowed, outcome);
                            v
                        }
                        None => {
                            self.app.gateway.call(&method, allowed, "unavailable");
                            error(
                                id,
                                code::UNAVAILABLE,
                                "no ready node answered; try again (gateway rule: ready-nodes)",
                            )
                        }
                    };
                    out.push(v);
                }
            }
        }
        let body = if batch {
            Value::Array(out)
        } else {
            out.into_iter().next().unwrap_or(Value::Null)
        };
        (StatusCode::OK, Answer::Json(body), node)
    }
}

/// On a zero-floor network the tips a wallet sees in `eth_feeHistory` are the
/// floor too (geth reports the prices of past transactions).
fn zero_rewards(answer: &mut Value, floor: Option<u64>) {
    let Some(floor) = floor else { return };
    if let Some(rewards) = answer
        .pointer_mut("/result/reward")
        .and_then(Value::as_array_mut)
    {
        for block in rewards.iter_mut().filter_map(Value::as_array_mut) {
            for r in block.iter_mut() {
                *r = json!(format!("{floor:#x}"));
            }
        }
    }
}

/// A JSON-RPC error answer.
pub fn error(id: Value, code: i64, message: &str) -> Value {
    let mut answer = json!({"jsonrpc": "2.0", "error": {"code": code, "message": message}});
    answer["id"] = id;
    answer
}

fn json_response(status: StatusCode, body: &Value, node: Option<&str>) -> Response {
    raw_response(status, Bytes::from(body.to_string()), node)
}

fn raw_response(status: StatusCode, body: Bytes, node: Option<&str>) -> Response {
    let mut response = (status, [(header::CONTENT_TYPE, "application/json")], body).into_response();
    if let Some(value) = node.and_then(|n| HeaderValue::from_str(n).ok()) {
        response.headers_mut().insert(HEADER_NODE, value);
    }
    response
}

async fn post(
    State(gw): State<Arc<Gateway>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    body: Body,
) -> Response {
    let started = Instant::now();
    let bytes = match axum::body::to_bytes(body, gw.max_body_bytes).await {
        Ok(b) => b,
        Err(_) => {
            gw.app.gateway.call("body", true, "limited");
            let message = format!(
                "request body over {} bytes refused (gateway rule: body-size)",
                gw.max_body_bytes
            );
            access(peer, "-", StatusCode::PAYLOAD_TOO_LARGE, None, started);
            return json_response(
                StatusCode::PAYLOAD_TOO_LARGE,
                &error(Value::Null, code::LIMIT, &message),
                None,
            );
        }
    };
    let request = match serde_json::from_slice::<Value>(&bytes) {
        Ok(v) => v,
        Err(e) => {
            gw.app.gateway.call("invalid", false, "refused");
            access(peer, "-", StatusCode::OK, None, started);
            return json_response(
                StatusCode::OK,
                &error(Value::Null, code::PARSE, &format!("invalid JSON: {e}")),
                None,
            );
        }
    };
    let first = first_method(&request);
    let (status, answer, node) = gw.handle(request, Some(&bytes), peer.ip(), true).await;
    gw.app
        .gateway
        .observe("http", started.elapsed().as_secs_f64());
    access(peer, &first, status, node.as_deref(), started);
    match answer {
        Answer::Json(v) => json_response(status, &v, node.as_deref()),
        Answer::Raw(bytes) => raw_response(status, bytes, node.as_deref()),
    }
}

fn first_method(request: &Value) -> String {
    let call = match request {
        Value::Array(calls) => calls.first(),
        other => Some(other),
    };
    let method = call
        .and_then(|c| c.get("method"))
        .and_then(Value::as_str)
        .unwrap_or("-");
    // Access log lines stay short whatever a client sends.
    let method: String = method.chars().take(64).collect();
    match request {
        Value::Array(calls) => format!("{method}+{}", calls.len().saturating_sub(1)),
        _ => method,
    }
}

/// One access log line per request: client, first method, status, node and
/// time; never bodies.
fn access(
    peer: SocketAddr,
    method: &str,
    status: StatusCode,
    node: Option<&str>,
    started: Instant,
) {
    tracing::info!(
        target: "gateway::access",
        client = %peer.ip(),
        method,
        status = status.as_u16(),
        node = node.unwrap_or("-"),
        ms = started.elapsed().as_secs_f64() * 1000.0,
        "rpc"
    );
}

async fn upgrade(
    State(gw): State<Arc<Gateway>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    match ws {
        Ok(ws) => {
            let Some(slot) = gw.sockets.open(peer.ip()) else {
                gw.app.gateway.call("websocket", true, "limited");
                let message = "too many open WebSocket connections from this client \
                               (gateway rule: websocket-connections)";
                return json_response(
                    StatusCode::TOO_MANY_REQUESTS,
                    &error(Value::Null, code::LIMIT, message),
                    None,
                );
            };
            ws.max_message_size(gw.max_body_bytes)
                .on_upgrade(move |socket| async move {
                    ws::relay(gw, peer, socket).await;
                    drop(slot);
                })
        }
        Err(_) => json_response(
            StatusCode::METHOD_NOT_ALLOWED,
            &error(
                Value::Null,
                code::INVALID_REQUEST,
                "POST JSON-RPC calls here, or open a WebSocket",
            ),
            None,
        ),
    }
}

/// The TLS configuration from `--gateway-cert` and `--gateway-key` (PEM).
pub fn load_tls(args: &GatewayArgs) -> Result<axum_server::tls_rustls::RustlsConfig, GatewayError> {
    let (Some(cert), Some(key)) = (&args.gateway_cert, &args.gateway_key) else {
        return Err(GatewayError::Config(
            "--gateway-listen needs --gateway-cert and --gateway-key (PEM files)".into(),
        ));
    };
    tls_config(cert, key)
}

/// rustls with the ring provider, chosen explicitly so no process-wide
/// default is needed.
pub fn tls_config(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> Result<axum_server::tls_rustls::RustlsConfig, GatewayError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let invalid = |path: &std::path::Path, e: String| GatewayError::Tls {
        path: path.display().to_string(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
    };
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| invalid(cert, e.to_string()))?;
    if chain.is_empty() {
        return Err(invalid(cert, "no certificate in the file".into()));
    }
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| invalid(key, e.to_string()))?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| invalid(cert, e.to_string()))?
    .with_no_client_auth()
    .with_single_cert(chain, key_der)
    .map_err(|e| invalid(key, e.to_string()))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(axum_server::tls_rustls::RustlsConfig::from_config(
        Arc::new(config),
    ))
}

/// Serves the gateway over HTTPS until `shutdown` fires.
pub async fn serve(
    gw: Arc<Gateway>,
    listener: std::net::TcpListener,
    tls: axum_server::tls_rustls::RustlsConfig,
    shutdown: CancellationToken,
) -> Result<(), GatewayError> {
    let addr = listener
        .local_addr()
        .map_err(|source| GatewayError::Config(format!("gateway listener: {source}")))?;
    listener
        .set_nonblocking(true)
        .map_err(|source| GatewayError::Listen { addr, source })?;
    let handle = axum_server::Handle::new();
    let stopper = handle.clone();
    tokio::spawn(async move {
        shutdown.cancelled().await;
        stopper.graceful_shutdown(Some(Duration::from_secs(5)));
    });
    tracing::info!(listen = %addr, nodes = gw.upstreams.len(), "JSON-RPC gateway at https://{addr}/");
    // TCP_NODELAY: small JSON-RPC answers must not wait for Nagle's algorithm.
    let acceptor = axum_server::tls_rustls::RustlsAcceptor::new(tls)
        .acceptor(axum_server::accept::NoDelayAcceptor::new());
    axum_server::from_tcp(listener)
        .map_err(|source| GatewayError::Listen { addr, source })?
        .acceptor(acceptor)
        .handle(handle)
        .serve(
            gw.router()
                .into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .map_err(|source| GatewayError::Listen { addr, source })
}
