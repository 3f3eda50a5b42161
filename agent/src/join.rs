//! `geth-agent join <aggregator URL>`: turns an empty folder into a
//! validation node of a running network, from one command.
//!
//! 1. Fetches the network bundle (`GET /api/bundle`) and checks it: signed by
//!    the aggregator key it names (and by `--expect-aggregator` if given), a
//!    clique genesis geth v1.13 can run, the genesis hash equal to
//!    `--expect-genesis-hash` if given, and the genesis really hashing to the
//!    announced hash (checked with geth in a scratch folder). Any mismatch is
//!    refused before anything is written to `--datadir`.
//! 2. Writes into `--datadir`: `genesis.json`, a fresh `nodekey` (0600),
//!    `config.toml` (loopback-by-default listen address, the bundle's live
//!    enodes as static peers), `agent.toml` (the aggregator URL and its pinned
//!    address); then `geth init`.
//! 3. Runs the node under the agent as a non-signer (no keys) and prints the
//!    sync progress (block / target, speed, time left) until `/readyz` says
//!    ready; the agent keeps running until SIGTERM.
//!
//! The aggregator refuses the node's reports (401) until an operator admits
//! its node key; the node syncs and serves reads meanwhile.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use alloy::primitives::{keccak256, Address, Signature};
use clap::Args;
use geth_wire::bundle::Bundle;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use crate::config::RunArgs;
use crate::init::InitError;
use crate::network::{genesis, keys, NetworkError, NodeKey};

/// Largest bundle accepted (a genesis with a big alloc is still far below).
const MAX_BUNDLE_BYTES: usize = 16 * 1024 * 1024;
/// sysexits EX_UNAVAILABLE: the aggregator could not be reached.
const EXIT_UNAVAILABLE: u8 = 69;

#[derive(Debug, Args)]
pub struct JoinArgs {
    /// The aggregator's base URL (http://host:8080).
    pub url: String,
    /// The new node's folder: geth's datadir, with the node's genesis.json,
    /// config.toml, agent.toml and nodekey beside geth's own files. Must not
    /// exist or be empty.
    #[arg(long, value_name = "DIR")]
    pub datadir: PathBuf,
    /// Refuse the bundle unless its genesis hash is this one (0x + 64 hex),
    /// learnt from the network's operator.
    #[arg(long, value_name = "HASH")]
    pub expect_genesis_hash: Option<String>,
    /// Refuse the bundle unless the aggregator that signed it has this address.
    #[arg(long, value_name = "ADDRESS")]
    pub expect_aggregator: Option<Address>,
    /// Node name in logs and on the dashboard [default: joined-<key prefix>].
    #[arg(long)]
    pub name: Option<String>,
    /// Host or IP peers use to reach this node; geth listens on it.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// devp2p port.
    #[arg(long, default_value_t = 30303)]
    pub p2p_port: u16,
    /// Users' JSON-RPC (HTTP) address.
    #[arg(long, default_value = "127.0.0.1:8545")]
    pub http: SocketAddr,
    /// The agent's /livez, /readyz and /metrics address.
    #[arg(long, default_value = "127.0.0.1:9101")]
    pub listen: SocketAddr,
    /// geth v1.13.15 binary [default: $GETH_BIN, else `geth` on the PATH].
    #[arg(long, env = "GETH_AGENT_GETH_BIN", value_name = "FILE")]
    pub geth_bin: Option<PathBuf>,
    /// Prepare the folder and initialise geth, then exit without running.
    #[arg(long)]
    pub no_run: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    #[error("{0}")]
    Usage(String),
    #[error("cannot fetch the network bundle from {url}: {reason}")]
    Fetch { url: String, reason: String },
    #[error("the network bundle is not valid: {0}")]
    BadBundle(String),
    #[error(
        "the bundle is signed by aggregator {found:#x}, not {expected:#x}; nothing was written"
    )]
    AggregatorMismatch { found: Address, expected: Address },
    #[error("genesis hash mismatch: the bundle's genesis is {found}, expected {expected}; nothing was written")]
    GenesisMismatch { found: String, expected: String },
    #[error("{0} is not empty: join writes a new node; choose another --datadir")]
    Exists(PathBuf),
    #[error(transparent)]
    Files(#[from] NetworkError),
    #[error("geth: {0}")]
    Init(#[from] InitError),
}

impl JoinError {
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Fetch { .. } => EXIT_UNAVAILABLE,
            Self::Files(_) | Self::Init(InitError::Geth(_)) => 1,
            _ => crate::cli::EXIT_USAGE,
        }
    }
}

/// Fetches the bundle; returns it with its body and signature header.
async fn fetch(url: &str) -> Result<(Vec<u8>, Option<String>), JoinError> {
    let target = format!("{}{}", url.trim_end_matches('/'), geth_wire::bundle::PATH);
    let fail = |reason: String| JoinError::Fetch {
        url: target.clone(),
        reason,
    };
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| fail(e.to_string()))?;
    let mut response = client
        .get(&target)
        .send()
        .await
        .map_err(|e| fail(e.to_string()))?;
    let status = response.status();
    let signature = response
        .headers()
        .get(geth_wire::HEADER_REPLY_SIGNATURE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| fail(e.to_string()))? {
        body.extend_from_slice(&chunk);
        if body.len() > MAX_BUNDLE_BYTES {
            return Err(fail(format!("more than {MAX_BUNDLE_BYTES} bytes")));
        }
    }
    if !status.is_success() {
        let reason = serde_json::from_slice::<Value>(&body)
            .ok()
            .and_then(|v| v.get("error")?.as_str().map(str::to_owned))
            .unwrap_or_else(|| String::from_utf8_lossy(&body).chars().take(200).collect());
        return Err(fail(format!("{status}: {reason}")));
    }
    Ok((body, signature))
}

/// Checks the signature and content of a fetched bundle; nothing touches the
/// disk here.
pub fn verify(
    body: &[u8],
    signature: Option<&str>,
    expect_aggregator: Option<Address>,
    expect_genesis_hash: Option<&str>,
) -> Result<Bundle, JoinError> {
    let bundle: Bundle = serde_json::from_slice(body)
        .map_err(|e| JoinError::BadBundle(format!("not a bundle: {e}")))?;
    let signature: Signature = signature
        .ok_or_else(|| JoinError::BadBundle("unsigned (no aggregator signature)".into()))?
        .parse()
        .map_err(|_| JoinError::BadBundle("the signature is not 65 bytes of hex".into()))?;
    let digest = keccak256(geth_wire::bundle::signing_payload(body));
    let signer = signature
        .recover_address_from_prehash(&digest)
        .map_err(|_| JoinError::BadBundle("the signature does not verify".into()))?;
    if signer != bundle.aggregator {
        return Err(JoinError::BadBundle(format!(
            "signed by {signer:#x}, but it names aggregator {:#x}",
            bundle.aggregator
        )));
    }
    if let Some(expected) = expect_aggregator {
        if signer != expected {
            return Err(JoinError::AggregatorMismatch {
                found: signer,
                expected,
            });
        }
    }
    let found = bundle.genesis_hash.to_lowercase();
    if !is_hash(&found) {
        return Err(JoinError::BadBundle(format!(
            "genesis_hash {:?} is not 0x + 64 hex digits",
            bundle.genesis_hash
        )));
    }
    if let Some(expected) = expect_genesis_hash {
        let expected = expected.trim().to_lowercase();
        let expected = if expected.starts_with("0x") {
            expected
        } else {
            format!("0x{expected}")
        };
        if !is_hash(&expected) {
            return Err(JoinError::Usage(format!(
                "--expect-genesis-hash {expected:?} is not 0x + 64 hex digits"
            )));
        }
        if found != expected {
            return Err(JoinError::GenesisMismatch { found, expected });
        }
    }
    genesis::validate(&bundle.genesis).map_err(|e| JoinError::BadBundle(e.to_string()))?;
    if genesis::chain_id(&bundle.genesis) != Some(bundle.chain_id) {
        return Err(JoinError::BadBundle(format!(
            "chain id {} differs from the genesis' config.chainId",
            bundle.chain_id
        )));
    }
    if bundle.enodes.is_empty() {
        return Err(JoinError::BadBundle("no enode to sync from".into()));
    }
    if let Some(bad) = bundle.enodes.iter().find(|e| !is_enode(e)) {
        return Err(JoinError::BadBundle(format!("bad enode {bad:?}")));
    }
    Ok(bundle)
}

fn is_hash(s: &str) -> bool {
    s.len() == 66 && s.starts_with("0x") && s[2..].chars().all(|c| c.is_ascii_hexdigit())
}

/// `enode://<128 hex>@host:port`, nothing a TOML string could break out of.
fn is_enode(s: &str) -> bool {
    let Some((id, at)) = s
        .strip_prefix("enode://")
        .and_then(|rest| rest.split_once('@'))
    else {
        return false;
    };
    let addr = at.split('?').next().unwrap_or_default();
    id.len() == 128
        && id.chars().all(|c| c.is_ascii_hexdigit())
        && addr.rsplit_once(':').is_some_and(|(host, port)| {
            !host.is_empty()
                && host
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '[' | ']' | ':'))
                && port.parse::<u16>().is_ok()
        })
}

/// What `prepare` wrote.
#[derive(Debug)]
pub struct Joined {
    pub name: String,
    pub enode: String,
    pub address: Address,
    pub genesis_hash: String,
}

fn folder_is_empty(dir: &Path) -> Result<bool, NetworkError> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => Ok(entries.next().is_none()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(true),
        Err(e) => Err(NetworkError::io(dir, e)),
    }
}

/// Checks the genesis with geth in a scratch folder, then writes the node's
/// folder and initialises geth.
pub async fn prepare(args: &JoinArgs, bundle: &Bundle) -> Result<Joined, JoinError> {
    if !folder_is_empty(&args.datadir)? {
        return Err(JoinError::Exists(args.datadir.clone()));
    }
    if let Some(name) = &args.name {
        if name.is_empty() || name.len() > 64 || name.chars().any(|c| c.is_control() || c == '"') {
            return Err(JoinError::Usage(format!(
                "--name {name:?}: use 1 to 64 printable characters, no quotes"
            )));
        }
    }
    let binary = args
        .geth_bin
        .clone()
        .unwrap_or_else(crate::geth::default_binary);
    crate::init::check_version(&bundle.genesis, crate::init::version(&binary).await?)?;
    let genesis_text = format!("{:#}\n", bundle.genesis);
    let scratch = tempfile::Builder::new()
        .prefix("geth-agent-join-")
        .tempdir()
        .map_err(|e| NetworkError::io(&std::env::temp_dir(), e))?;
    let scratch_genesis = scratch.path().join("genesis.json");
    std::fs::write(&scratch_genesis, &genesis_text)
        .map_err(|e| NetworkError::io(&scratch_genesis, e))?;
    let computed = crate::init::configured_hash(&binary, &scratch_genesis)
        .await?
        .to_lowercase();
    if computed != bundle.genesis_hash.to_lowercase() {
        return Err(JoinError::BadBundle(format!(
            "its genesis hashes to {computed}, not to the announced {}; nothing was written",
            bundle.genesis_hash
        )));
    }

    let dir = &args.datadir;
    std::fs::create_dir_all(dir).map_err(|e| NetworkError::io(dir, e))?;
    let key = NodeKey::random();
    let name = args
        .name
        .clone()
        .unwrap_or_else(|| format!("joined-{}", &format!("{:x}", key.address())[..8]));
    let enode = format!("enode://{}@{}:{}", key.enode_id(), args.host, args.p2p_port);
    write(&dir.join("genesis.json"), &genesis_text)?;
    key.write(&dir.join("nodekey"))?;
    write(&dir.join("config.toml"), &geth_config_toml(args, bundle))?;
    write(
        &dir.join("agent.toml"),
        &agent_toml(args, &name, bundle.aggregator),
    )?;
    let config = run_args(args)
        .resolve()
        .map_err(|e| JoinError::Usage(e.to_string()))?;
    crate::init::prepare(&config.geth, &config.genesis).await?;
    Ok(Joined {
        name,
        enode,
        address: key.address(),
        genesis_hash: computed,
    })
}

fn write(path: &Path, text: &str) -> Result<(), NetworkError> {
    std::fs::write(path, text).map_err(|e| NetworkError::io(path, e))
}

fn geth_config_toml(args: &JoinArgs, bundle: &Bundle) -> String {
    use std::fmt::Write as _;
    let mut toml = String::from("# geth v1.13 node config, written by `geth-agent join`.\n");
    toml.push_str("[Node.P2P]\n");
    let _ = writeln!(toml, "ListenAddr = \"{}:{}\"", args.host, args.p2p_port);
    toml.push_str("NoDiscovery = true\n");
    toml.push_str("StaticNodes = [\n");
    for enode in &bundle.enodes {
        let _ = writeln!(toml, "  \"{enode}\",");
    }
    toml.push_str("]\n");
    toml
}

fn agent_toml(args: &JoinArgs, name: &str, aggregator: Address) -> String {
    use std::fmt::Write as _;
    let mut toml =
        String::from("# geth-agent config for this node, written by `geth-agent join`.\n");
    toml.push_str("# Paths are relative to this file. A validation node: no signer key.\n");
    let _ = writeln!(toml, "name = \"{name}\"");
    let _ = writeln!(toml, "aggregator = \"{}\"", args.url.trim_end_matches('/'));
    let _ = writeln!(toml, "aggregator_address = \"{aggregator:#x}\"");
    toml.push_str("genesis = \"genesis.json\"\n");
    toml.push_str("geth_config = \"config.toml\"\n");
    toml.push_str("nodekey = \"nodekey\"\n");
    let _ = writeln!(toml, "http = \"{}\"", args.http);
    let _ = writeln!(toml, "listen = \"{}\"", args.listen);
    toml
}

/// `geth-agent run` options for the prepared folder.
fn run_args(args: &JoinArgs) -> RunArgs {
    RunArgs {
        config: Some(args.datadir.join("agent.toml")),
        datadir: Some(args.datadir.clone()),
        geth_bin: args.geth_bin.clone(),
        ..RunArgs::default()
    }
}

/// `geth-agent join`.
pub async fn run(args: JoinArgs) -> ExitCode {
    match join(&args).await {
        Ok(None) => ExitCode::SUCCESS,
        Ok(Some(run)) => {
            let stop = CancellationToken::new();
            let follower = tokio::spawn(follow(args.http, args.listen, stop.clone()));
            let code = crate::cli::run_node(run).await;
            stop.cancel();
            let _ = follower.await;
            code
        }
        Err(e) => {
            eprintln!("geth-agent join: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

/// Fetch, check, write, init; the run options unless `--no-run`.
async fn join(args: &JoinArgs) -> Result<Option<RunArgs>, JoinError> {
    let (body, signature) = fetch(&args.url).await?;
    let bundle = verify(
        &body,
        signature.as_deref(),
        args.expect_aggregator,
        args.expect_genesis_hash.as_deref(),
    )?;
    println!(
        "bundle: network {} (chain {}, period {} s), genesis {}, aggregator {:#x}, {} peers",
        bundle.name,
        bundle.chain_id,
        bundle.period,
        bundle.genesis_hash,
        bundle.aggregator,
        bundle.enodes.len()
    );
    let joined = prepare(args, &bundle).await?;
    println!(
        "initialised {} as {} (genesis {})",
        args.datadir.display(),
        joined.name,
        joined.genesis_hash
    );
    println!("node key address {:#x}", joined.address);
    println!("enode {}", joined.enode);
    println!(
        "to be admitted, an operator runs: geth-aggregator nodes admit {} --name {}",
        joined.enode, joined.name
    );
    if args.no_run {
        println!(
            "start it with: geth-agent run --config {} --datadir {}",
            args.datadir.join("agent.toml").display(),
            args.datadir.display()
        );
        return Ok(None);
    }
    Ok(Some(run_args(args)))
}

#[derive(Debug, Args)]
pub struct SignerKeyArgs {
    /// The node's agent.toml (as `geth-agent join` wrote it); the key goes
    /// into `keystore/` beside it, its password into `password` (0600).
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
}

/// `geth-agent signer-key`: creates this node's clique signer key on its own
/// machine (it never travels) and makes the node a signer candidate: geth
/// unlocks it, serves JSON-RPC on IPC only and seals once clique votes the
/// address in (`geth-aggregator signers add`). Takes effect at the agent's
/// next start.
pub fn signer_key(args: &SignerKeyArgs) -> Result<Address, JoinError> {
    let text =
        std::fs::read_to_string(&args.config).map_err(|e| NetworkError::io(&args.config, e))?;
    let table: toml::Table = text
        .parse()
        .map_err(|e| JoinError::Usage(format!("{}: {e}", args.config.display())))?;
    if table.contains_key("signer") || table.contains_key("keystore") {
        return Err(JoinError::Usage(format!(
            "{} already names a signer key",
            args.config.display()
        )));
    }
    let dir = args.config.parent().unwrap_or_else(|| Path::new("."));
    let keystore = dir.join("keystore");
    if !folder_is_empty(&keystore)? {
        return Err(JoinError::Exists(keystore));
    }
    let password = keys::random_password();
    keys::write_secret(&dir.join("password"), password.as_bytes())?;
    let (address, _) = keys::new_keystore_account(&keystore, &password)?;
    // An unlocked account must not be reachable over HTTP: the http line goes.
    let mut kept: String = text
        .lines()
        .filter(|l| !l.trim_start().starts_with("http ") && !l.trim_start().starts_with("http="))
        .map(|l| format!("{l}\n"))
        .collect();
    kept.push_str("# Signer key made on this machine by `geth-agent signer-key` (IPC only).\n");
    kept.push_str("keystore = \"keystore\"\npassword_file = \"password\"\n");
    kept.push_str(&format!("signer = \"{address:#x}\"\nmine_min_peers = 1\n"));
    crate::shutdown::write_atomic(&args.config, kept.as_bytes())
        .map_err(|e| NetworkError::io(&args.config, e))?;
    Ok(address)
}

/// `geth-agent signer-key` with its output.
pub fn run_signer_key(args: &SignerKeyArgs) -> ExitCode {
    match signer_key(args) {
        Ok(address) => {
            println!(
                "signer key {address:#x} created beside {}",
                args.config.display()
            );
            println!("restart the agent, then: geth-aggregator signers add {address:#x}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("geth-agent signer-key: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

/// One JSON-RPC call to geth's HTTP endpoint.
async fn rpc(client: &reqwest::Client, url: &str, method: &str, params: Value) -> Option<Value> {
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
    let reply: Value = client
        .post(url)
        .json(&body)
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    reply.get("result").cloned()
}

fn hex_u64(v: Option<&Value>) -> Option<u64> {
    u64::from_str_radix(v?.as_str()?.trim_start_matches("0x"), 16).ok()
}

/// Sync progress of one sample.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Progress {
    pub head: u64,
    pub target: u64,
    /// Blocks per second since the previous sample.
    pub rate: f64,
}

impl Progress {
    /// Seconds until the target at the current rate (none when not moving).
    pub fn eta_s(&self) -> Option<u64> {
        let left = self.target.saturating_sub(self.head);
        (left == 0)
            .then_some(0)
            .or_else(|| (self.rate > 0.0).then(|| (left as f64 / self.rate).ceil() as u64))
    }
}

impl std::fmt::Display for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.target == 0 {
            return f.write_str("sync: waiting for peers (block 0)");
        }
        write!(
            f,
            "sync: block {} / {} ({:.1} blocks/s",
            self.head, self.target, self.rate
        )?;
        match self.eta_s() {
            Some(s) => write!(f, ", ~{s} s left)"),
            None => f.write_str(", time left unknown)"),
        }
    }
}

/// Prints the sync progress until the agent's /readyz answers 200.
async fn follow(http: SocketAddr, listen: SocketAddr, stop: CancellationToken) {
    let Ok(client) = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
    else {
        return;
    };
    let rpc_url = format!("http://{http}");
    let readyz = format!("http://{listen}/readyz");
    let mut last: Option<(u64, Instant)> = None;
    let mut printed: Option<(u64, u64)> = None;
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let latest = rpc(
            &client,
            &rpc_url,
            "eth_getBlockByNumber",
            json!(["latest", false]),
        )
        .await;
        let Some(head) = hex_u64(latest.as_ref().and_then(|b| b.get("number"))) else {
            continue;
        };
        let syncing = rpc(&client, &rpc_url, "eth_syncing", json!([])).await;
        let target = hex_u64(syncing.as_ref().and_then(|s| s.get("highestBlock")))
            .unwrap_or(head)
            .max(head);
        let now = Instant::now();
        let rate = match last {
            Some((before, at)) if now > at => {
                head.saturating_sub(before) as f64 / (now - at).as_secs_f64()
            }
            _ => 0.0,
        };
        last = Some((head, now));
        if printed != Some((head, target)) {
            println!("{}", Progress { head, target, rate });
            printed = Some((head, target));
        }
        let ready = client
            .get(&readyz)
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        if ready {
            let hash = latest
                .as_ref()
                .and_then(|b| b.get("hash")?.as_str().map(str::to_owned))
                .unwrap_or_default();
            println!("ready: head {head} {hash}");
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use alloy::signers::local::PrivateKeySigner;
    use alloy::signers::SignerSync;

    use super::*;

    const HASH: &str = "0x0c1dda39056f95e247da7418f4a15f6d9afca020971e58a159668efad3774428";

    fn bundle(aggregator: Address) -> Bundle {
        Bundle {
            name: "test".into(),
            chain_id: 1337,
            period: 2,
            genesis: serde_json::from_str(genesis::TEMPLATES[0].text).unwrap(),
            genesis_hash: HASH.into(),
            enodes: vec![format!("enode://{}@127.0.0.1:30303", "ab".repeat(64))],
            aggregator,
            issued_ms: 1,
        }
    }

    fn signed(key: &PrivateKeySigner, bundle: &Bundle) -> (Vec<u8>, String) {
        let body = serde_json::to_vec(bundle).unwrap();
        let digest = keccak256(geth_wire::bundle::signing_payload(&body));
        let sig = key.sign_hash_sync(&digest).unwrap();
        (body, format!("0x{}", hex::encode(sig.as_bytes())))
    }

    #[test]
    fn a_signed_bundle_is_accepted_and_pins_what_was_expected() {
        let key = PrivateKeySigner::random();
        let (body, sig) = signed(&key, &bundle(key.address()));
        let b = verify(&body, Some(&sig), Some(key.address()), Some(HASH)).unwrap();
        assert_eq!(b.genesis_hash, HASH);
        // Upper case and without 0x: the same hash.
        let bare = HASH[2..].to_uppercase();
        assert!(verify(&body, Some(&sig), None, Some(&bare)).is_ok());

        let other = "0x".to_owned() + &"11".repeat(32);
        assert!(matches!(
            verify(&body, Some(&sig), None, Some(&other)),
            Err(JoinError::GenesisMismatch { .. })
        ));
        assert!(matches!(
            verify(&body, Some(&sig), Some(Address::repeat_byte(9)), None),
            Err(JoinError::AggregatorMismatch { .. })
        ));
        assert!(matches!(
            verify(&body, Some(&sig), None, Some("0x12")),
            Err(JoinError::Usage(_))
        ));
    }

    #[test]
    fn forged_unsigned_or_hostile_bundles_are_refused() {
        let key = PrivateKeySigner::random();
        let (body, sig) = signed(&key, &bundle(key.address()));
        assert!(matches!(
            verify(&body, None, None, None),
            Err(JoinError::BadBundle(_))
        ));
        // Signed by someone else than the aggregator it names.
        let (_, forged) = signed(&PrivateKeySigner::random(), &bundle(key.address()));
        assert!(matches!(
            verify(&body, Some(&forged), None, None),
            Err(JoinError::BadBundle(_))
        ));
        // A body changed after signing.
        let mut changed = body;
        changed.extend_from_slice(b" ");
        assert!(verify(&changed, Some(&sig), None, None).is_err());
        // An enode that would break out of the TOML string, London, no peers.
        for spoil in [
            |b: &mut Bundle| b.enodes = vec!["enode://x\"]\n@h:1".into()],
            |b: &mut Bundle| b.genesis["config"]["londonBlock"] = json!(0),
            |b: &mut Bundle| b.enodes.clear(),
            |b: &mut Bundle| b.chain_id = 1,
            |b: &mut Bundle| b.genesis_hash = "0x12".into(),
        ] {
            let mut b = bundle(key.address());
            spoil(&mut b);
            let (body, sig) = signed(&key, &b);
            assert!(
                matches!(
                    verify(&body, Some(&sig), None, None),
                    Err(JoinError::BadBundle(_))
                ),
                "{b:?}"
            );
        }
        assert!(verify(b"not json", Some(&sig), None, None).is_err());
    }

    #[test]
    fn progress_says_block_target_speed_and_time_left() {
        let p = Progress {
            head: 50,
            target: 150,
            rate: 10.0,
        };
        assert_eq!(
            p.to_string(),
            "sync: block 50 / 150 (10.0 blocks/s, ~10 s left)"
        );
        let stuck = Progress { rate: 0.0, ..p };
        assert_eq!(stuck.eta_s(), None);
        assert_eq!(Progress { head: 150, ..stuck }.eta_s(), Some(0));
        let start = Progress {
            head: 0,
            target: 0,
            rate: 0.0,
        };
        assert_eq!(start.to_string(), "sync: waiting for peers (block 0)");
    }

    #[test]
    fn written_configs_are_a_validator_pinned_to_the_aggregator() {
        let dir = tempfile::tempdir().unwrap();
        let args = JoinArgs {
            url: "http://127.0.0.1:8080/".into(),
            datadir: dir.path().join("node"),
            expect_genesis_hash: None,
            expect_aggregator: None,
            name: None,
            host: "127.0.0.1".into(),
            p2p_port: 30399,
            http: "127.0.0.1:8599".parse().unwrap(),
            listen: "127.0.0.1:9199".parse().unwrap(),
            geth_bin: None,
            no_run: true,
        };
        let b = bundle(Address::repeat_byte(5));
        let geth = geth_config_toml(&args, &b);
        assert!(geth.contains("ListenAddr = \"127.0.0.1:30399\""), "{geth}");
        assert!(geth.contains(&b.enodes[0]), "{geth}");
        let agent = agent_toml(&args, "j", b.aggregator);
        let parsed: toml::Table = agent.parse().unwrap();
        assert_eq!(parsed["aggregator"].as_str(), Some("http://127.0.0.1:8080"));
        assert_eq!(
            parsed["aggregator_address"].as_str(),
            Some(format!("{:#x}", b.aggregator).as_str())
        );
        assert!(parsed.get("signer").is_none() && parsed.get("keystore").is_none());
        // The agent takes these files as they are.
        std::fs::create_dir_all(&args.datadir).unwrap();
        write(
            &args.datadir.join("genesis.json"),
            genesis::TEMPLATES[0].text,
        )
        .unwrap();
        write(&args.datadir.join("config.toml"), &geth).unwrap();
        write(&args.datadir.join("agent.toml"), &agent).unwrap();
        NodeKey::random()
            .write(&args.datadir.join("nodekey"))
            .unwrap();
        let config = run_args(&args).resolve().unwrap();
        assert_eq!(config.name, "j");
        assert_eq!(config.listen, args.listen);
        assert!(!folder_is_empty(&args.datadir).unwrap());
        assert!(folder_is_empty(&dir.path().join("missing")).unwrap());

        // The signer key: made here, the HTTP line gone, only once.
        let key_args = SignerKeyArgs {
            config: args.datadir.join("agent.toml"),
        };
        let address = signer_key(&key_args).unwrap();
        let config = run_args(&args).resolve().unwrap();
        assert_eq!(config.geth.http, None, "an unlocked signer serves no HTTP");
        assert_eq!(
            config.geth.signer.as_ref().map(|s| s.address),
            Some(address)
        );
        assert!(matches!(signer_key(&key_args), Err(JoinError::Usage(_))));
    }
}
