//! `geth-agent ctl`: the admin socket's client, human-readable by default.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Subcommand};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;

use crate::admin::{Message, StatusReply};

#[derive(Debug, Args)]
pub struct CtlArgs {
    /// Admin socket [default: <datadir>/geth-agent/admin.sock].
    #[arg(long, env = "GETH_AGENT_ADMIN_SOCKET", value_name = "FILE")]
    pub socket: Option<PathBuf>,
    /// The node's datadir, to find its admin socket.
    #[arg(long, env = "GETH_AGENT_DATADIR", value_name = "DIR")]
    pub datadir: Option<PathBuf>,
    /// Print the agent's JSON answer as it is.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: CtlCommand,
}

#[derive(Debug, Subcommand)]
pub enum CtlCommand {
    /// Node status: phase, head, peers, readiness, last shutdown.
    Status,
    /// Stop geth (one SIGTERM, proven clean shutdown); it stays stopped.
    Stop,
    /// Start a stopped geth.
    Start,
    /// Stop geth cleanly, then start it again.
    Restart,
    /// geth's peers.
    Peers,
    /// Add a peer: `enode://<id>@host:port`.
    AddPeer { enode: String },
}

#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    #[error("cannot reach the agent at {path}: {source}")]
    Connect {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("admin request failed: {0}")]
    Http(String),
    #[error("set --socket or --datadir (GETH_AGENT_DATADIR)")]
    NoSocket,
}

pub async fn run(args: CtlArgs) -> ExitCode {
    let socket = match (&args.socket, &args.datadir) {
        (Some(socket), _) => socket.clone(),
        (None, Some(datadir)) => datadir.join("geth-agent").join("admin.sock"),
        (None, None) => return fail(&CtlError::NoSocket),
    };
    let (method, path, body) = match &args.command {
        CtlCommand::Status => (Method::GET, "/status", None),
        CtlCommand::Stop => (Method::POST, "/stop", None),
        CtlCommand::Start => (Method::POST, "/start", None),
        CtlCommand::Restart => (Method::POST, "/restart", None),
        CtlCommand::Peers => (Method::GET, "/peers", None),
        CtlCommand::AddPeer { enode } => (
            Method::POST,
            "/peers",
            Some(serde_json::json!({ "enode": enode }).to_string()),
        ),
    };
    let (code, text) = match request(&socket, method, path, body).await {
        Ok(answer) => answer,
        Err(e) => return fail(&e),
    };
    if args.json {
        println!("{text}");
    } else {
        println!("{}", human(&args.command, code, &text));
    }
    if code.is_success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn fail(e: &CtlError) -> ExitCode {
    eprintln!("geth-agent ctl: {e}");
    ExitCode::from(69) // EX_UNAVAILABLE
}

/// One HTTP/1.1 request over the Unix socket.
pub async fn request(
    socket: &Path,
    method: Method,
    path: &str,
    body: Option<String>,
) -> Result<(StatusCode, String), CtlError> {
    let stream = UnixStream::connect(socket)
        .await
        .map_err(|source| CtlError::Connect {
            path: socket.to_owned(),
            source,
        })?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| CtlError::Http(e.to_string()))?;
    tokio::spawn(connection);
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "geth-agent")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.unwrap_or_default())))
        .map_err(|e| CtlError::Http(e.to_string()))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| CtlError::Http(e.to_string()))?;
    let code = response.status();
    let bytes = response
        .into_body()
        .collect()
        .await
        .map_err(|e| CtlError::Http(e.to_string()))?
        .to_bytes();
    Ok((code, String::from_utf8_lossy(&bytes).into_owned()))
}

fn human(command: &CtlCommand, code: StatusCode, text: &str) -> String {
    if let Ok(message) = serde_json::from_str::<Message>(text) {
        return format!(
            "{}{}",
            if message.ok { "" } else { "error: " },
            message.message
        );
    }
    match command {
        CtlCommand::Status => match serde_json::from_str::<StatusReply>(text) {
            Ok(reply) => status_text(&reply),
            Err(_) => text.to_owned(),
        },
        CtlCommand::Peers => match serde_json::from_str::<Vec<serde_json::Value>>(text) {
            Ok(peers) => {
                let mut out = format!("{} peer(s)", peers.len());
                for p in peers {
                    let remote = p
                        .pointer("/network/remoteAddress")
                        .and_then(|v| v.as_str())
                        .unwrap_or("?");
                    let inbound = p
                        .pointer("/network/inbound")
                        .and_then(|v| v.as_bool())
                        .unwrap_or(false);
                    let name = p.get("name").and_then(|v| v.as_str()).unwrap_or("?");
                    out.push_str(&format!(
                        "\n  {remote:<22} {:<8} {name}",
                        if inbound { "inbound" } else { "outbound" }
                    ));
                }
                out
            }
            Err(_) => text.to_owned(),
        },
        _ => format!("{code}: {text}"),
    }
}

fn status_text(reply: &StatusReply) -> String {
    let s = &reply.status;
    let opt = |v: Option<u64>| v.map_or("-".to_owned(), |v| v.to_string());
    let mut out = format!(
        "node      {} ({:?} mode)\nphase     {}\ngeth pid  {}\nhead      {} {}\npeers     {}\nsyncing   {}\nready     {}",
        s.name,
        s.mode,
        format!("{:?}", s.phase).to_lowercase(),
        s.pid.map_or("-".into(), |p| p.to_string()),
        opt(s.chain.head),
        s.chain.head_hash.as_deref().unwrap_or(""),
        opt(s.chain.peers),
        s.chain.syncing.map_or("-".into(), |v| v.to_string()),
        if reply.readiness.ready { "yes" } else { "no" },
    );
    for c in reply.readiness.conditions.iter().filter(|c| !c.ok) {
        out.push_str(&format!(
            "\n  not ready: {} is {} (want {})",
            c.name, c.value, c.want
        ));
    }
    if let Some(reason) = &s.blocked {
        out.push_str(&format!("\nblocked   {reason}"));
    }
    if let Some(reason) = &s.waiting {
        out.push_str(&format!("\nwaiting   {reason}"));
    }
    if let Some(v) = &s.last_shutdown {
        out.push_str(&format!(
            "\nlast stop {} — {}",
            if v.clean { "clean" } else { "UNCLEAN" },
            v.reason
        ));
    }
    out.push_str(&format!(
        "\ncounters  starts {}, restarts {}, clean stops {}, unclean stops {}, blocks lost {}",
        s.starts, s.restarts, s.clean_shutdowns, s.unclean_shutdowns, s.blocks_lost_total
    ));
    out
}
