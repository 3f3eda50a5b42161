//! Admin API: HTTP over a Unix socket (mode 0600). A client must run as the
//! agent's uid (or root, if allowed); others get 403 and are disconnected.
//!
//! | method | path | what |
//! |---|---|---|
//! | GET | /status | node status and readiness |
//! | POST | /stop, /start, /restart | lifecycle (spawn mode; attach: restart only) |
//! | GET | /peers | geth's `admin_peers` |
//! | POST | /peers | `{"enode": "enode://…"}` → `admin_addPeer` |

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use crate::readiness::{self, Readiness, ReadinessConfig};
use crate::rpc::GethRpc;
use crate::status::{now_ms, NodeStatus};
use crate::supervisor::{Command, Outcome, Request};

const MAX_BODY: usize = 4 * 1024;

#[derive(Clone)]
pub struct AdminState {
    pub status: watch::Receiver<NodeStatus>,
    pub readiness: ReadinessConfig,
    pub requests: mpsc::Sender<Request>,
    pub ipc: PathBuf,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct StatusReply {
    pub status: NodeStatus,
    pub readiness: Readiness,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Message {
    pub ok: bool,
    pub message: String,
    /// For lifecycle commands: what was done, with the shutdown verdict.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<Outcome>,
}

#[derive(Debug, Deserialize)]
struct AddPeer {
    enode: String,
}

pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/status", get(status))
        .route("/stop", post(|s| command(s, Command::Stop)))
        .route("/start", post(|s| command(s, Command::Start)))
        .route("/restart", post(|s| command(s, Command::Restart)))
        .route("/peers", get(peers).post(add_peer))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}

/// Binds the socket: removes a stale one, creates the folder, mode 0600.
pub fn bind(path: &Path) -> std::io::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// A Unix listener that only hands over connections from allowed uids.
pub struct PeerCheckedListener {
    inner: UnixListener,
    uid: u32,
    allow_root: bool,
}

impl PeerCheckedListener {
    pub fn new(inner: UnixListener, allow_root: bool) -> Self {
        Self {
            inner,
            uid: nix::unistd::geteuid().as_raw(),
            allow_root,
        }
    }

    fn allowed(&self, uid: u32) -> bool {
        uid == self.uid || (self.allow_root && uid == 0)
    }
}

impl axum::serve::Listener for PeerCheckedListener {
    type Io = UnixStream;
    type Addr = tokio::net::unix::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let (stream, addr) = match self.inner.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "admin socket accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            };
            match stream.peer_cred() {
                Ok(cred) if self.allowed(cred.uid()) => return (stream, addr),
                Ok(cred) => {
                    tracing::warn!(uid = cred.uid(), "admin client refused: wrong uid");
                    tokio::spawn(refuse(
                        stream,
                        format!("uid {} may not use this socket", cred.uid()),
                    ));
                }
                Err(e) => tracing::warn!(error = %e, "admin client refused: no peer credentials"),
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// Answers 403 with the reason, after reading the request head (an HTTP client
/// that gets an answer before it has sent its request treats it as cancelled).
async fn refuse(mut stream: UnixStream, reason: String) {
    use tokio::io::AsyncReadExt;
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    let read_head = async {
        while head.len() < 8 * 1024 && !head.windows(4).any(|w| w == b"\r\n\r\n") {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
    };
    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), read_head).await;
    let body = serde_json::json!({ "ok": false, "message": reason }).to_string();
    let response = format!(
        "HTTP/1.1 403 Forbidden\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(1),
        stream.write_all(response.as_bytes()),
    )
    .await;
}

pub async fn serve(
    listener: PeerCheckedListener,
    state: AdminState,
    cancel: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(cancel.cancelled_owned())
        .await
}

async fn status(State(state): State<AdminState>) -> Json<StatusReply> {
    let status = state.status.borrow().clone();
    let readiness = readiness::evaluate(&status, &state.readiness, status.reference_head, now_ms());
    Json(StatusReply { status, readiness })
}

fn reply(code: StatusCode, ok: bool, message: String) -> Response {
    let body = Message {
        ok,
        message,
        outcome: None,
    };
    (code, Json(body)).into_response()
}

async fn command(State(state): State<AdminState>, command: Command) -> Response {
    let (tx, rx) = oneshot::channel();
    if state
        .requests
        .send(Request { command, reply: tx })
        .await
        .is_err()
    {
        return reply(
            StatusCode::SERVICE_UNAVAILABLE,
            false,
            "the supervisor is stopping".into(),
        );
    }
    match rx.await {
        Ok(outcome) => {
            let code = match &outcome {
                Outcome::Failed { .. } => StatusCode::INTERNAL_SERVER_ERROR,
                Outcome::Refused { .. } => StatusCode::CONFLICT,
                _ => StatusCode::OK,
            };
            let body = Message {
                ok: outcome.ok(),
                message: outcome.to_string(),
                outcome: Some(outcome),
            };
            (code, Json(body)).into_response()
        }
        Err(_) => reply(
            StatusCode::SERVICE_UNAVAILABLE,
            false,
            "the supervisor is stopping".into(),
        ),
    }
}

async fn peers(State(state): State<AdminState>) -> Response {
    let result = async {
        let rpc = GethRpc::connect(&state.ipc).await?;
        rpc.call::<_, serde_json::Value>("admin_peers", ()).await
    };
    match result.await {
        Ok(peers) => (StatusCode::OK, Json(peers)).into_response(),
        Err(e) => reply(StatusCode::SERVICE_UNAVAILABLE, false, e.to_string()),
    }
}

async fn add_peer(State(state): State<AdminState>, body: axum::body::Bytes) -> Response {
    let request: AddPeer = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return reply(
                StatusCode::BAD_REQUEST,
                false,
                format!("expected {{\"enode\": \"enode://…\"}}: {e}"),
            )
        }
    };
    if let Err(reason) = check_enode(&request.enode) {
        return reply(StatusCode::BAD_REQUEST, false, reason);
    }
    let result = async {
        let rpc = GethRpc::connect(&state.ipc).await?;
        rpc.call::<_, bool>("admin_addPeer", (request.enode.as_str(),))
            .await
    };
    match result.await {
        Ok(true) => reply(StatusCode::OK, true, "peer added".into()),
        Ok(false) => reply(StatusCode::CONFLICT, false, "geth refused the peer".into()),
        Err(e) => reply(StatusCode::SERVICE_UNAVAILABLE, false, e.to_string()),
    }
}

/// `enode://<128 hex>@host:port[?discport=…]`.
pub fn check_enode(enode: &str) -> Result<(), String> {
    let bad = |why: &str| Err(format!("not an enode URL ({why}): {enode:.200}"));
    let Some(rest) = enode.strip_prefix("enode://") else {
        return bad("must start with enode://");
    };
    let Some((id, addr)) = rest.split_once('@') else {
        return bad("missing @host:port");
    };
    if id.len() != 128 || !id.chars().all(|c| c.is_ascii_hexdigit()) {
        return bad("the node id must be 128 hex characters");
    }
    let addr = addr.split('?').next().unwrap_or_default();
    let Some((host, port)) = addr.rsplit_once(':') else {
        return bad("missing :port");
    };
    if host.is_empty() || port.parse::<u16>().is_err() {
        return bad("bad host or port");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enode_checks() {
        let id = "a".repeat(128);
        assert!(check_enode(&format!("enode://{id}@127.0.0.1:30303")).is_ok());
        assert!(check_enode(&format!("enode://{id}@geth-0.geth:30303?discport=0")).is_ok());
        for bad in [
            String::new(),
            "http://x".into(),
            format!("enode://{}@127.0.0.1:30303", "a".repeat(127)),
            format!("enode://{id}@127.0.0.1"),
            format!("enode://{id}@:1"),
            format!("enode://{id}@h:99999"),
        ] {
            assert!(check_enode(&bad).is_err(), "{bad}");
        }
    }
}
