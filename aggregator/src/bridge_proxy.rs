//! `/bridge` and `/bridge/*` forwarded to the bridge signing service
//! (`geth-bridge serve`, `--bridge-url`): its page, the page's script and the
//! signing API, so the page shares the dashboard's origin. The signing keys
//! stay in the bridge's own process; this module only relays bytes.

use std::error::Error as _;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::any;
use axum::{Json, Router};
use bytes::Bytes;
use http_body_util::{BodyDataStream, BodyExt, Full, LengthLimitError, Limited};
use serde_json::json;
use tokio_stream::StreamExt;

use crate::gateway::upstream;
use crate::state::App;

/// Signing requests are a transaction hash and a log index: a few hundred bytes.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;
/// The page, its script and the API answers are far below this.
pub const MAX_RESPONSE_BYTES: usize = 8 * 1024 * 1024;
/// Time for the bridge's answer to start, and the longest pause while it streams.
const TIMEOUT: Duration = Duration::from_secs(30);

/// Request headers passed on; everything else (cookies, the operator's
/// `Authorization`) stays here.
const REQUEST_HEADERS: [HeaderName; 4] = [
    header::CONTENT_TYPE,
    header::ACCEPT,
    header::ACCEPT_LANGUAGE,
    header::USER_AGENT,
];
/// Response headers passed back (no hop-by-hop ones, no cookies).
const RESPONSE_HEADERS: [HeaderName; 6] = [
    header::CONTENT_TYPE,
    header::CONTENT_LENGTH,
    header::CACHE_CONTROL,
    header::ETAG,
    header::LAST_MODIFIED,
    header::RETRY_AFTER,
];

#[derive(Debug, Clone, Default, clap::Args)]
pub struct BridgeArgs {
    /// The bridge signing service (`geth-bridge serve`), e.g.
    /// `http://127.0.0.1:8090`: `/bridge/` (its page and signing API) is
    /// forwarded there. Without it `/bridge` answers 404.
    #[arg(long, env = "GETH_AGGREGATOR_BRIDGE_URL", value_name = "URL")]
    pub bridge_url: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum BridgeUrlError {
    #[error(
        "--bridge-url {0:?}: expected http://host:port (plain HTTP on a trusted network, no path)"
    )]
    Invalid(String),
}

/// Where the bridge service answers, and the client to call it.
pub struct BridgeProxy {
    /// `http://host:port`, no trailing slash.
    base: String,
    client: upstream::Client,
}

impl std::fmt::Debug for BridgeProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BridgeProxy")
            .field("base", &self.base)
            .finish()
    }
}

impl BridgeProxy {
    pub fn from_args(args: &BridgeArgs) -> Result<Option<Arc<Self>>, BridgeUrlError> {
        let Some(url) = &args.bridge_url else {
            return Ok(None);
        };
        let base = parse_base(url)?;
        Ok(Some(Arc::new(Self {
            base,
            client: upstream::client(),
        })))
    }

    pub fn base(&self) -> &str {
        &self.base
    }
}

/// `http://host:port` with at most a trailing slash: the forwarded path is
/// the request's own (`/bridge/…`), exactly what the service serves.
fn parse_base(url: &str) -> Result<String, BridgeUrlError> {
    let invalid = || BridgeUrlError::Invalid(url.to_owned());
    let uri: Uri = url.parse().map_err(|_| invalid())?;
    if uri.scheme_str() != Some("http")
        || uri.authority().is_none()
        || uri.query().is_some()
        || !matches!(uri.path(), "" | "/")
        || uri.authority().is_some_and(|a| a.as_str().contains('@'))
    {
        return Err(invalid());
    }
    Ok(format!("http://{}", uri.authority().ok_or_else(invalid)?))
}

pub fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/bridge", any(forward))
        .route("/bridge/", any(forward))
        .route("/bridge/{*rest}", any(forward))
}

fn refuse(status: StatusCode, reason: &str, message: impl Into<String>) -> Response {
    let message: String = message.into();
    (status, Json(json!({ "error": message, "reason": reason }))).into_response()
}

/// The dashboard page with the "Bridge" header link shown when the bridge is
/// configured (the page hides it by default).
pub fn dashboard_page(page: &'static str, configured: bool) -> std::borrow::Cow<'static, str> {
    if configured {
        page.replacen(" data-bridge-link hidden", " data-bridge-link", 1)
            .into()
    } else {
        page.into()
    }
}

async fn forward(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    request: Request,
) -> Response {
    let Some(bridge) = app.bridge.clone() else {
        return refuse(
            StatusCode::NOT_FOUND,
            "bridge_not_configured",
            "the bridge page is not enabled: start the aggregator with --bridge-url \
             http://HOST:PORT (env GETH_AGGREGATOR_BRIDGE_URL) pointing at `geth-bridge serve`",
        );
    };
    relay(&bridge, peer, request).await
}

/// One request to the bridge service and its answer back.
pub async fn relay(bridge: &BridgeProxy, peer: std::net::SocketAddr, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    // The page loads its script and API relative to `/bridge/`.
    if parts.uri.path() == "/bridge" {
        return Redirect::permanent("/bridge/").into_response();
    }
    if !matches!(parts.method, Method::GET | Method::HEAD | Method::POST) {
        return refuse(
            StatusCode::METHOD_NOT_ALLOWED,
            "method",
            format!("{} is not forwarded to the bridge", parts.method),
        );
    }
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/bridge/");
    if path.split(['/', '?']).any(|s| s == "..") {
        return refuse(
            StatusCode::BAD_REQUEST,
            "path",
            "path segments `..` are not forwarded",
        );
    }
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_REQUEST_BYTES as u64) {
        return too_large();
    }
    let body = match Limited::new(body, MAX_REQUEST_BYTES).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => return too_large(),
        Err(e) => {
            return refuse(
                StatusCode::BAD_REQUEST,
                "body",
                format!("cannot read the request body: {e}"),
            )
        }
    };
    let mut outgoing = hyper::Request::builder()
        .method(parts.method.clone())
        .uri(format!("{}{path}", bridge.base));
    for name in &REQUEST_HEADERS {
        for value in parts.headers.get_all(name) {
            outgoing = outgoing.header(name, value);
        }
    }
    // For the service's logs only: it rate-limits by connection address.
    if let Ok(v) = HeaderValue::from_str(&peer.ip().to_string()) {
        outgoing = outgoing.header("x-forwarded-for", v);
    }
    let outgoing = match outgoing.body(Full::new(body)) {
        Ok(r) => r,
        Err(e) => {
            return refuse(
                StatusCode::BAD_REQUEST,
                "request",
                format!("cannot forward this request: {e}"),
            )
        }
    };
    let answer = match tokio::time::timeout(TIMEOUT, bridge.client.request(outgoing)).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            let cause = e.source().map(|s| s.to_string()).unwrap_or_default();
            tracing::warn!(bridge = %bridge.base, error = %e, %cause, "bridge unreachable");
            return refuse(
                StatusCode::BAD_GATEWAY,
                "bridge_unreachable",
                format!(
                    "the bridge service at {} does not answer: {e} {cause}",
                    bridge.base
                )
                .trim_end()
                .to_owned(),
            );
        }
        Err(_) => {
            return refuse(
                StatusCode::GATEWAY_TIMEOUT,
                "bridge_timeout",
                format!(
                    "the bridge service did not answer within {}s",
                    TIMEOUT.as_secs()
                ),
            )
        }
    };
    let (head, incoming) = answer.into_parts();
    let length = head
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if length.is_some_and(|n| n > MAX_RESPONSE_BYTES as u64) {
        return refuse(
            StatusCode::BAD_GATEWAY,
            "bridge_answer_too_large",
            format!("the bridge's answer exceeds {MAX_RESPONSE_BYTES} bytes"),
        );
    }
    // Streamed on; an over-long or stalled answer is cut off (the client
    // sees a broken body, never a truncated one that looks complete).
    let stream = BodyDataStream::new(Limited::new(incoming, MAX_RESPONSE_BYTES))
        .timeout(TIMEOUT)
        .map(|chunk| match chunk {
            Ok(Ok(bytes)) => Ok::<Bytes, axum::BoxError>(bytes),
            Ok(Err(e)) => Err(e),
            Err(elapsed) => Err(Box::new(elapsed) as axum::BoxError),
        });
    let mut response = Response::new(Body::from_stream(stream));
    *response.status_mut() = head.status;
    for name in &RESPONSE_HEADERS {
        for value in head.headers.get_all(name) {
            response.headers_mut().append(name, value.clone());
        }
    }
    response
}

fn too_large() -> Response {
    refuse(
        StatusCode::PAYLOAD_TOO_LARGE,
        "body_too_large",
        format!("request bodies for the bridge are limited to {MAX_REQUEST_BYTES} bytes"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bridge_url_is_plain_http_host_and_port() {
        assert_eq!(
            parse_base("http://127.0.0.1:8090").unwrap(),
            "http://127.0.0.1:8090"
        );
        assert_eq!(
            parse_base("http://bridge.internal:8090/").unwrap(),
            "http://bridge.internal:8090"
        );
        for bad in [
            "",
            "127.0.0.1:8090",
            "https://127.0.0.1:8090",
            "http://127.0.0.1:8090/prefix",
            "http://127.0.0.1:8090/?x=1",
            "http://user:pw@127.0.0.1:8090",
            "ftp://127.0.0.1",
        ] {
            assert!(parse_base(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn bridge_link_is_revealed_only_when_configured() {
        let page = r#"<a class="chain" href="bridge/" data-bridge-link hidden>Bridge</a>"#;
        assert!(dashboard_page(page, false).contains("data-bridge-link hidden"));
        let shown = dashboard_page(page, true);
        assert!(!shown.contains("hidden"), "{shown}");
        assert!(shown.contains(r#"href="bridge/""#));
    }

    /// Answers with the headers it received, as JSON.
    async fn echo_server() -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let app = Router::new().route(
            "/bridge/{*rest}",
            any(|headers: axum::http::HeaderMap| async move {
                let seen: serde_json::Map<String, serde_json::Value> = headers
                    .iter()
                    .map(|(k, v)| (k.to_string(), json!(v.to_str().unwrap_or_default())))
                    .collect();
                Json(seen)
            }),
        );
        tokio::spawn(async move { axum::serve(listener, app).await });
        url
    }

    #[tokio::test]
    async fn credentials_and_cookies_are_not_forwarded() {
        let url = echo_server().await;
        let bridge = BridgeProxy::from_args(&BridgeArgs {
            bridge_url: Some(url),
        })
        .unwrap()
        .unwrap();
        let request = axum::http::Request::post("/bridge/v1/x/sign")
            .header(header::AUTHORIZATION, "Bearer operator-admin-token")
            .header(header::COOKIE, "session=1")
            .header(header::CONTENT_TYPE, "application/json")
            .header("x-forwarded-for", "203.0.113.9")
            .body(Body::from("{}"))
            .unwrap();
        let peer = std::net::SocketAddr::from(([127, 0, 0, 7], 4000));
        let response = relay(&bridge, peer, request).await;
        assert_eq!(response.status(), StatusCode::OK);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let seen: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(seen["content-type"], "application/json", "{seen}");
        assert_eq!(seen["x-forwarded-for"], "127.0.0.7", "{seen}");
        assert!(seen.get("authorization").is_none(), "{seen}");
        assert!(seen.get("cookie").is_none(), "{seen}");
    }

    #[tokio::test]
    async fn dot_segments_and_other_methods_are_refused() {
        let bridge = BridgeProxy::from_args(&BridgeArgs {
            bridge_url: Some("http://127.0.0.1:9".into()),
        })
        .unwrap()
        .unwrap();
        let peer = std::net::SocketAddr::from(([127, 0, 0, 1], 4000));
        let get = |path: &str| axum::http::Request::get(path).body(Body::empty()).unwrap();
        let r = relay(&bridge, peer, get("/bridge/../metrics")).await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        let delete = axum::http::Request::delete("/bridge/v1/x/sign")
            .body(Body::empty())
            .unwrap();
        let r = relay(&bridge, peer, delete).await;
        assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
        let r = relay(&bridge, peer, get("/bridge")).await;
        assert_eq!(r.status(), StatusCode::PERMANENT_REDIRECT);
    }

    #[test]
    fn the_dashboard_has_the_hidden_bridge_link() {
        let page = include_str!("../web/index.html");
        assert!(page.contains(" data-bridge-link hidden"));
    }
}
