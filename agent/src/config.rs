//! `geth-agent run` configuration: flags, `GETH_AGENT_*` environment variables
//! and an optional TOML file (flags win over env, env over the file). Every
//! problem is reported at once; `main` exits 64 on any of them.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use alloy::primitives::Address;
use clap::Args;
use serde::Deserialize;

use crate::geth::{Durability, GethCommand, SignerArgs};
use crate::readiness::ReadinessConfig;
use crate::status::Mode;

pub const DEFAULT_NETRESTRICT: &str = "127.0.0.0/8";
pub const DEFAULT_MINE_WAIT_SECS: u64 = 30;
pub const DEFAULT_SHUTDOWN_GRACE_SECS: u64 = 120;
pub const DEFAULT_MIN_GAS_PRICE_WEI: u64 = 0;
pub const DEFAULT_LISTEN: &str = "0.0.0.0:9101";
pub const DEFAULT_RESTART_BACKOFF_MAX_SECS: u64 = 60;
pub const DEFAULT_REWRITE_CONFIRMATIONS: u64 = 6;
pub const DEFAULT_RECOVERY_HOLD_SECS: u64 = 120;

/// Options of `geth-agent run`. Every option can also come from the TOML file
/// given by `--config` (same names, with `_` for `-`).
#[derive(Debug, Clone, Default, Args)]
pub struct RunArgs {
    /// TOML file with any of the options below; relative paths in it are
    /// relative to the file.
    #[arg(long, env = "GETH_AGENT_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Node name used in logs and reports.
    #[arg(long, env = "GETH_AGENT_NAME")]
    pub name: Option<String>,
    /// geth data directory (created and initialised from --genesis if needed).
    #[arg(long, env = "GETH_AGENT_DATADIR", value_name = "DIR")]
    pub datadir: Option<PathBuf>,
    /// geth v1.13.15 binary [default: $GETH_BIN, else `geth` on the PATH].
    #[arg(long, env = "GETH_AGENT_GETH_BIN", value_name = "FILE")]
    pub geth_bin: Option<PathBuf>,
    /// Clique genesis JSON used to initialise the datadir.
    #[arg(long, env = "GETH_AGENT_GENESIS", value_name = "FILE")]
    pub genesis: Option<PathBuf>,
    /// geth `--config` TOML (P2P ListenAddr, StaticNodes).
    #[arg(long, env = "GETH_AGENT_GETH_CONFIG", value_name = "FILE")]
    pub geth_config: Option<PathBuf>,
    /// devp2p node key file (hex), fixing the node's enode.
    #[arg(long, env = "GETH_AGENT_NODEKEY", value_name = "FILE")]
    pub nodekey: Option<PathBuf>,
    /// Signer (sealer) account; needs --keystore and --password-file.
    #[arg(long, env = "GETH_AGENT_SIGNER", value_name = "ADDRESS")]
    pub signer: Option<String>,
    /// Keystore folder holding the signer account.
    #[arg(long, env = "GETH_AGENT_KEYSTORE", value_name = "DIR")]
    pub keystore: Option<PathBuf>,
    /// File with the signer keystore's password.
    #[arg(long, env = "GETH_AGENT_PASSWORD_FILE", value_name = "FILE")]
    pub password_file: Option<PathBuf>,
    /// Serve geth's HTTP JSON-RPC on this address (eth, net, web3, txpool,
    /// clique). Refused for signers: their account is unlocked, so users reach
    /// the chain through non-signer (validator) nodes.
    #[arg(long, env = "GETH_AGENT_HTTP", value_name = "ADDR:PORT")]
    pub http: Option<String>,
    /// Networks geth may talk to (geth --netrestrict) [default: 127.0.0.0/8].
    #[arg(long, env = "GETH_AGENT_NETRESTRICT", value_name = "CIDRS")]
    pub netrestrict: Option<String>,
    /// Also write geth's JSON log to this file.
    #[arg(long, env = "GETH_AGENT_GETH_LOG_FILE", value_name = "FILE")]
    pub geth_log_file: Option<PathBuf>,
    /// Signers start sealing once this many peers are connected [default: 0].
    #[arg(long, env = "GETH_AGENT_MINE_MIN_PEERS", value_name = "N")]
    pub mine_min_peers: Option<usize>,
    /// ...or after this many seconds without them [default: 30].
    #[arg(long, env = "GETH_AGENT_MINE_WAIT_SECS", value_name = "SECS")]
    pub mine_wait_secs: Option<u64>,
    /// Lowest gas price (wei) geth's pool and miner accept, applied over IPC at
    /// every start; 0 makes zero-fee transactions work network-wide [default: 0].
    #[arg(long, env = "GETH_AGENT_MIN_GAS_PRICE_WEI", value_name = "WEI")]
    pub min_gas_price_wei: Option<u64>,
    /// Seconds geth gets to stop after one SIGTERM before it is killed [default: 120].
    #[arg(long, env = "GETH_AGENT_SHUTDOWN_GRACE_SECS", value_name = "SECS")]
    pub shutdown_grace_secs: Option<u64>,
    /// spawn: geth is the agent's child. attach: geth runs beside the agent
    /// (a pod's other container) and is found by its --datadir [default: spawn].
    #[arg(long, env = "GETH_AGENT_MODE", value_name = "spawn|attach")]
    pub mode: Option<String>,
    /// Attach mode: file holding geth's pid (else /proc is searched by datadir).
    #[arg(long, env = "GETH_AGENT_PID_FILE", value_name = "FILE")]
    pub pid_file: Option<PathBuf>,
    /// Address for /livez, /readyz and /metrics [default: 0.0.0.0:9101].
    #[arg(long, env = "GETH_AGENT_LISTEN", value_name = "ADDR:PORT")]
    pub listen: Option<String>,
    /// Admin Unix socket [default: <datadir>/geth-agent/admin.sock].
    #[arg(long, env = "GETH_AGENT_ADMIN_SOCKET", value_name = "FILE")]
    pub admin_socket: Option<PathBuf>,
    /// Also accept admin clients running as root (uid 0) [default: false].
    #[arg(long, env = "GETH_AGENT_ADMIN_ALLOW_ROOT", value_name = "BOOL")]
    pub admin_allow_root: Option<bool>,
    /// Ready only with at least this many peers [default: 1].
    #[arg(long, env = "GETH_AGENT_MIN_PEERS", value_name = "N")]
    pub min_peers: Option<u64>,
    /// Ready only within this many blocks of the reference head [default: 2].
    #[arg(long, env = "GETH_AGENT_MAX_LAG", value_name = "BLOCKS")]
    pub max_lag: Option<u64>,
    /// Ready only if the head is at most this many block periods old [default: 6].
    #[arg(long, env = "GETH_AGENT_MAX_HEAD_AGE_PERIODS", value_name = "N")]
    pub max_head_age_periods: Option<u64>,
    /// Longest wait between restarts of a crashing geth, seconds [default: 60].
    #[arg(long, env = "GETH_AGENT_RESTART_BACKOFF_MAX_SECS", value_name = "SECS")]
    pub restart_backoff_max_secs: Option<u64>,
    /// geth-aggregator base URL (http://host:8080): report heads, stats and
    /// lifecycle events there, signed with the node key (needs --nodekey).
    #[arg(long, env = "GETH_AGENT_AGGREGATOR", value_name = "URL")]
    pub aggregator: Option<String>,
    /// Address of the aggregator's reply key (network.json's `aggregator.address`):
    /// replies not signed by it are ignored. Required with --aggregator.
    #[arg(long, env = "GETH_AGENT_AGGREGATOR_ADDRESS", value_name = "ADDRESS")]
    pub aggregator_address: Option<String>,
    /// archive: geth keeps every block's state on disk (`--gcmode archive`),
    /// so a power cut of the whole network loses no confirmed block. standard:
    /// geth's default, recent state in memory [default: archive for signers,
    /// standard for validators; in attach mode `geth-agent geth` applies it,
    /// and shutdowns are judged by the running geth's own --gcmode].
    #[arg(long, env = "GETH_AGENT_DURABILITY", value_name = "archive|standard")]
    pub durability: Option<String>,
    /// A block replaced after this many blocks were built on it counts as
    /// rewritten history (clique_history_rewrites_total) [default: 6].
    #[arg(long, env = "GETH_AGENT_REWRITE_CONFIRMATIONS", value_name = "BLOCKS")]
    pub rewrite_confirmations: Option<u64>,
    /// After an unclean stop a signer reporting to an aggregator holds sealing
    /// until its head reaches the fleet's highest, at most this long; 0: no
    /// hold [default: 120].
    #[arg(long, env = "GETH_AGENT_RECOVERY_HOLD_SECS", value_name = "SECS")]
    pub recovery_hold_secs: Option<u64>,
    /// Extra arguments passed to geth as they are (after `--`).
    #[arg(last = true, value_name = "GETH_ARGS")]
    pub geth_args: Vec<String>,
}

/// The same options, from the TOML file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    name: Option<String>,
    datadir: Option<PathBuf>,
    geth_bin: Option<PathBuf>,
    genesis: Option<PathBuf>,
    geth_config: Option<PathBuf>,
    nodekey: Option<PathBuf>,
    signer: Option<String>,
    keystore: Option<PathBuf>,
    password_file: Option<PathBuf>,
    http: Option<String>,
    netrestrict: Option<String>,
    geth_log_file: Option<PathBuf>,
    mine_min_peers: Option<usize>,
    mine_wait_secs: Option<u64>,
    min_gas_price_wei: Option<u64>,
    shutdown_grace_secs: Option<u64>,
    mode: Option<String>,
    pid_file: Option<PathBuf>,
    listen: Option<String>,
    admin_socket: Option<PathBuf>,
    admin_allow_root: Option<bool>,
    min_peers: Option<u64>,
    max_lag: Option<u64>,
    max_head_age_periods: Option<u64>,
    restart_backoff_max_secs: Option<u64>,
    aggregator: Option<String>,
    aggregator_address: Option<String>,
    durability: Option<String>,
    rewrite_confirmations: Option<u64>,
    recovery_hold_secs: Option<u64>,
    #[serde(default)]
    geth_args: Vec<String>,
}

/// Validated configuration of one supervised node.
#[derive(Debug, Clone)]
pub struct RunConfig {
    pub name: String,
    pub genesis: PathBuf,
    pub geth: GethCommand,
    pub mine_min_peers: usize,
    pub mine_wait: Duration,
    pub min_gas_price_wei: u64,
    pub shutdown_grace: Duration,
    pub mode: Mode,
    pub pid_file: Option<PathBuf>,
    pub listen: SocketAddr,
    pub admin_socket: PathBuf,
    pub admin_allow_root: bool,
    pub readiness: ReadinessConfig,
    pub restart_backoff_max: Duration,
    /// Clique block period from the genesis, seconds.
    pub period: u64,
    /// geth-aggregator base URL.
    pub aggregator: Option<String>,
    /// The key that must sign the aggregator's replies (set whenever `aggregator` is).
    pub aggregator_address: Option<Address>,
    /// Depth from which a replaced block counts as rewritten history.
    pub rewrite_confirmations: u64,
    /// Longest sealing hold after an unclean stop (`None`: no hold).
    pub recovery_hold: Option<Duration>,
}

#[derive(Debug, thiserror::Error)]
#[error("invalid configuration:\n  - {}", .0.join("\n  - "))]
pub struct ConfigError(pub Vec<String>);

impl RunConfig {
    /// Archive nodes write state every block and log no state lines on shutdown.
    pub fn archive(&self) -> bool {
        self.geth.durability == Durability::Archive
    }
}

impl RunArgs {
    /// Merges flags/env with the TOML file and validates everything.
    pub fn resolve(self) -> Result<RunConfig, ConfigError> {
        let mut errors = Vec::new();
        let file = match &self.config {
            Some(path) => match load_file(path) {
                Ok(file) => file,
                Err(e) => {
                    errors.push(e);
                    FileConfig::default()
                }
            },
            None => FileConfig::default(),
        };
        let base = self
            .config
            .as_deref()
            .and_then(Path::parent)
            .unwrap_or(Path::new("."));
        let rel = |p: Option<PathBuf>| p.map(|p| base.join(p));

        let name = self.name.or(file.name).unwrap_or_else(|| "geth".into());
        let datadir = self.datadir.or(rel(file.datadir));
        let genesis = self.genesis.or(rel(file.genesis));
        let geth_bin = self
            .geth_bin
            .or(rel(file.geth_bin))
            .unwrap_or_else(crate::geth::default_binary);
        let geth_config = self.geth_config.or(rel(file.geth_config));
        let nodekey = self.nodekey.or(rel(file.nodekey));
        let keystore = self.keystore.or(rel(file.keystore));
        let password_file = self.password_file.or(rel(file.password_file));
        let geth_log_file = self.geth_log_file.or(rel(file.geth_log_file));

        if name.is_empty() || name.len() > 64 || name.chars().any(|c| c.is_control()) {
            errors.push(format!("name {name:?}: use 1 to 64 printable characters"));
        }
        if datadir.is_none() {
            errors.push("datadir: required (--datadir or GETH_AGENT_DATADIR)".into());
        }
        match &genesis {
            None => errors.push("genesis: required (--genesis or GETH_AGENT_GENESIS)".into()),
            Some(g) if !g.is_file() => {
                errors.push(format!("genesis: {} is not a file", g.display()))
            }
            Some(_) => {}
        }
        for (what, path) in [
            ("geth_config", &geth_config),
            ("nodekey", &nodekey),
            ("password_file", &password_file),
        ] {
            if let Some(p) = path.as_ref().filter(|p| !p.is_file()) {
                errors.push(format!("{what}: {} is not a file", p.display()));
            }
        }
        if let Some(k) = keystore.as_ref().filter(|k| !k.is_dir()) {
            errors.push(format!("keystore: {} is not a folder", k.display()));
        }
        let http = match self.http.or(file.http) {
            None => None,
            Some(h) => match h.parse::<SocketAddr>() {
                Ok(addr) => Some(addr),
                Err(_) => {
                    errors.push(format!("http: {h:?} is not an IP:port address"));
                    None
                }
            },
        };
        let signer = match self.signer.or(file.signer) {
            None => None,
            Some(s) => match s.parse::<Address>() {
                Ok(address) => match (&keystore, &password_file) {
                    (Some(keystore), Some(password_file)) => Some(SignerArgs {
                        address,
                        keystore: keystore.clone(),
                        password_file: password_file.clone(),
                    }),
                    _ => {
                        errors.push("signer: needs keystore and password_file".into());
                        None
                    }
                },
                Err(_) => {
                    errors.push(format!("signer: {s:?} is not an address"));
                    None
                }
            },
        };
        let netrestrict = self
            .netrestrict
            .or(file.netrestrict)
            .unwrap_or_else(|| DEFAULT_NETRESTRICT.into());
        if netrestrict.trim().is_empty() {
            errors.push("netrestrict: must name at least one network (e.g. 127.0.0.0/8)".into());
        }
        let mine_wait_secs = self
            .mine_wait_secs
            .or(file.mine_wait_secs)
            .unwrap_or(DEFAULT_MINE_WAIT_SECS);
        let shutdown_grace_secs = self
            .shutdown_grace_secs
            .or(file.shutdown_grace_secs)
            .unwrap_or(DEFAULT_SHUTDOWN_GRACE_SECS);
        if shutdown_grace_secs == 0 {
            errors.push("shutdown_grace_secs: must be at least 1".into());
        }
        let mode = match self.mode.or(file.mode).as_deref() {
            None | Some("spawn") => Mode::Spawn,
            Some("attach") => Mode::Attach,
            Some(other) => {
                errors.push(format!("mode: {other:?} is not spawn or attach"));
                Mode::Spawn
            }
        };
        if mode == Mode::Attach && geth_log_file.is_none() {
            errors.push(
                "geth_log_file: attach mode follows geth's --log.file; set it to the same path"
                    .into(),
            );
        }
        let pid_file = self.pid_file.or(rel(file.pid_file));
        let listen_text = self
            .listen
            .or(file.listen)
            .unwrap_or_else(|| DEFAULT_LISTEN.into());
        let listen = listen_text.parse::<SocketAddr>().unwrap_or_else(|_| {
            errors.push(format!("listen: {listen_text:?} is not an IP:port address"));
            SocketAddr::from(([0, 0, 0, 0], 9101))
        });
        let admin_socket = self.admin_socket.or(rel(file.admin_socket));
        let defaults = ReadinessConfig::default();
        let readiness = ReadinessConfig {
            min_peers: self
                .min_peers
                .or(file.min_peers)
                .unwrap_or(defaults.min_peers),
            max_lag: self.max_lag.or(file.max_lag).unwrap_or(defaults.max_lag),
            max_head_age_periods: self
                .max_head_age_periods
                .or(file.max_head_age_periods)
                .unwrap_or(defaults.max_head_age_periods),
            answer_window_ms: defaults.answer_window_ms,
        };
        if readiness.max_head_age_periods == 0 {
            errors.push("max_head_age_periods: must be at least 1".into());
        }
        let genesis_json = genesis
            .as_ref()
            .and_then(|g| std::fs::read_to_string(g).ok())
            .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok());
        let period = genesis_json.as_ref().map(crate::network::genesis::period);
        if genesis.as_ref().is_some_and(|g| g.is_file()) && period.is_none() {
            errors.push("genesis: not valid JSON".into());
        }
        let restart_backoff_max = Duration::from_secs(
            self.restart_backoff_max_secs
                .or(file.restart_backoff_max_secs)
                .unwrap_or(DEFAULT_RESTART_BACKOFF_MAX_SECS)
                .max(1),
        );
        let aggregator = self
            .aggregator
            .or(file.aggregator)
            .filter(|a| !a.is_empty());
        if let Some(url) = &aggregator {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                errors.push(format!("aggregator: {url:?} is not an http(s) URL"));
            }
            if nodekey.is_none() {
                errors.push("aggregator: reports are signed with the node key; set nodekey".into());
            }
        }
        let aggregator_address = match self.aggregator_address.or(file.aggregator_address) {
            Some(a) => a.parse::<Address>().map(Some).unwrap_or_else(|_| {
                errors.push(format!("aggregator_address: {a:?} is not an address"));
                None
            }),
            None => {
                if aggregator.is_some() {
                    errors.push(
                        "aggregator_address: required with aggregator (network.json's \
                         aggregator.address): unsigned replies are not trusted"
                            .into(),
                    );
                }
                None
            }
        };
        let mut geth_args = file.geth_args;
        geth_args.extend(self.geth_args);
        // In attach mode `geth-agent geth` (the platform's launcher) applies
        // the same default; the shutdown judge reads the running geth's own
        // --gcmode, so a geth started otherwise is never judged as archive.
        let durability = match self.durability.or(file.durability) {
            None => Durability::default_for(if signer.is_some() {
                geth_wire::network::Role::Signer
            } else {
                geth_wire::network::Role::Validator
            }),
            Some(text) => text.parse().unwrap_or_else(|e| {
                errors.push(format!("durability: {e}"));
                Durability::Archive
            }),
        };
        if let Some(arg) = geth_args.iter().find(|a| {
            let name = a.trim_start_matches('-');
            a.starts_with('-') && name.split('=').next() == Some("gcmode")
        }) {
            errors.push(format!(
                "geth_args: {arg:?} refused: the durability setting chooses geth's gcmode \
                 (durability = \"archive\" or \"standard\")"
            ));
        }
        let rewrite_confirmations = self
            .rewrite_confirmations
            .or(file.rewrite_confirmations)
            .unwrap_or(DEFAULT_REWRITE_CONFIRMATIONS);
        if rewrite_confirmations == 0 {
            errors.push("rewrite_confirmations: must be at least 1".into());
        }
        if signer.is_some() {
            errors.extend(signer_rpc_problems(
                http,
                &geth_args,
                geth_config.as_deref(),
            ));
        }
        let min_gas_price_wei = self
            .min_gas_price_wei
            .or(file.min_gas_price_wei)
            .unwrap_or(DEFAULT_MIN_GAS_PRICE_WEI);
        let london = genesis_json
            .as_ref()
            .is_some_and(crate::network::genesis::has_london);
        if london && min_gas_price_wei == 0 {
            errors.push(
                "min_gas_price_wei: 0 cannot work on this genesis: it sets londonBlock, and \
                 London burns a base fee in every block (never below 7 wei); use a pre-London \
                 genesis for zero gas, or set min_gas_price_wei to at least 1"
                    .into(),
            );
        }

        if !errors.is_empty() {
            return Err(ConfigError(errors));
        }
        let (Some(datadir), Some(genesis)) = (datadir, genesis) else {
            unreachable!("missing datadir/genesis are reported above");
        };
        let admin_socket =
            admin_socket.unwrap_or_else(|| datadir.join("geth-agent").join("admin.sock"));
        let mut geth = GethCommand::new(geth_bin, datadir);
        geth.config = geth_config;
        geth.nodekey = nodekey;
        geth.signer = signer;
        geth.http = http;
        geth.netrestrict = netrestrict;
        geth.log_file = geth_log_file;
        geth.min_gas_price_wei = Some(min_gas_price_wei);
        geth.durability = durability;
        geth.network_id = genesis_json
            .as_ref()
            .and_then(crate::network::genesis::chain_id);
        geth.extra_args = geth_args;
        Ok(RunConfig {
            name,
            genesis,
            geth,
            mine_min_peers: self.mine_min_peers.or(file.mine_min_peers).unwrap_or(0),
            mine_wait: Duration::from_secs(mine_wait_secs),
            min_gas_price_wei,
            shutdown_grace: Duration::from_secs(shutdown_grace_secs),
            mode,
            pid_file,
            listen,
            admin_socket,
            admin_allow_root: self
                .admin_allow_root
                .or(file.admin_allow_root)
                .unwrap_or(false),
            readiness,
            restart_backoff_max,
            period: period.flatten().unwrap_or(0),
            aggregator,
            aggregator_address,
            rewrite_confirmations,
            recovery_hold: Some(
                self.recovery_hold_secs
                    .or(file.recovery_hold_secs)
                    .unwrap_or(DEFAULT_RECOVERY_HOLD_SECS),
            )
            .filter(|s| *s > 0)
            .map(Duration::from_secs),
        })
    }
}

/// geth flags that open a JSON-RPC listener beyond IPC (also in `-flag` and
/// `--flag=value` spellings).
const RPC_LISTENER_FLAGS: [&str; 7] = [
    "http",
    "http.addr",
    "http.port",
    "ws",
    "ws.addr",
    "ws.port",
    "graphql",
];

/// A signer's account is unlocked: any process that reaches its HTTP or
/// WebSocket JSON-RPC could `eth_sendTransaction` from it and `clique_propose`.
/// Signers therefore serve JSON-RPC on IPC only (the agent's own channel).
fn signer_rpc_problems(
    http: Option<SocketAddr>,
    geth_args: &[String],
    geth_config: Option<&Path>,
) -> Vec<String> {
    let why = "a signer's account is unlocked, so anyone reaching that port could send \
               transactions from it and vote with clique_propose; serve users through a \
               validator (non-signer) node";
    let mut problems = Vec::new();
    if let Some(addr) = http {
        problems.push(format!(
            "http: {addr} refused for a signer (remove `http`): {why}"
        ));
    }
    for arg in geth_args {
        let name = arg.trim_start_matches('-');
        let name = name.split('=').next().unwrap_or(name);
        if arg.starts_with('-') && RPC_LISTENER_FLAGS.contains(&name) {
            problems.push(format!("geth_args: {arg:?} refused for a signer: {why}"));
        }
        if arg.starts_with('-') && name == "allow-insecure-unlock" {
            problems.push(format!(
                "geth_args: {arg:?} refused: signers serve no HTTP, so nothing needs it"
            ));
        }
    }
    if let Some(path) = geth_config {
        let table = std::fs::read_to_string(path)
            .ok()
            .and_then(|t| t.parse::<toml::Table>().ok());
        let node = table.as_ref().and_then(|t| t.get("Node"));
        for key in ["HTTPHost", "WSHost"] {
            let host = node.and_then(|n| n.get(key)).and_then(|v| v.as_str());
            if let Some(host) = host.filter(|h| !h.is_empty()) {
                problems.push(format!(
                    "geth_config: {} sets [Node] {key} = {host:?}, refused for a signer: {why}",
                    path.display()
                ));
            }
        }
    }
    problems
}

fn load_file(path: &Path) -> Result<FileConfig, String> {
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("config {}: {e}", path.display()))?;
    toml::from_str(&text).map_err(|e| format!("config {}: {}", path.display(), e.message()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_every_problem_at_once() {
        let args = RunArgs {
            name: Some(String::new()),
            http: Some("nope".into()),
            signer: Some("0x12".into()),
            shutdown_grace_secs: Some(0),
            ..RunArgs::default()
        };
        let err = args.resolve().unwrap_err();
        let text = err.to_string();
        for needle in [
            "name",
            "datadir",
            "genesis",
            "http",
            "signer",
            "shutdown_grace_secs",
        ] {
            assert!(text.contains(needle), "{needle} missing from {text}");
        }
        assert_eq!(err.0.len(), 6, "{text}");
    }

    #[test]
    fn file_values_resolve_relative_to_the_file_and_flags_win() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("genesis.json"), "{}").unwrap();
        std::fs::write(dir.path().join("pw"), "x").unwrap();
        std::fs::create_dir(dir.path().join("ks")).unwrap();
        let file = dir.path().join("agent.toml");
        std::fs::write(
            &file,
            "name = \"from-file\"\ngenesis = \"genesis.json\"\ndatadir = \"data\"\n\
             keystore = \"ks\"\npassword_file = \"pw\"\n\
             signer = \"0x00000000000000000000000000000000000000aa\"\nmine_min_peers = 2\n",
        )
        .unwrap();
        let args = RunArgs {
            config: Some(file),
            name: Some("from-flag".into()),
            ..RunArgs::default()
        };
        let config = args.resolve().unwrap();
        assert_eq!(config.name, "from-flag");
        assert_eq!(config.genesis, dir.path().join("genesis.json"));
        assert_eq!(config.geth.datadir, dir.path().join("data"));
        assert_eq!(config.mine_min_peers, 2);
        assert!(config.geth.signer.is_some());
        assert_eq!(config.min_gas_price_wei, 0);
    }

    /// A signer config that is valid apart from what each case adds.
    fn signer_args(dir: &Path) -> RunArgs {
        std::fs::write(dir.join("genesis.json"), "{}").unwrap();
        std::fs::write(dir.join("pw"), "x").unwrap();
        std::fs::create_dir_all(dir.join("ks")).unwrap();
        RunArgs {
            datadir: Some(dir.join("data")),
            genesis: Some(dir.join("genesis.json")),
            keystore: Some(dir.join("ks")),
            password_file: Some(dir.join("pw")),
            signer: Some("0x00000000000000000000000000000000000000aa".into()),
            ..RunArgs::default()
        }
    }

    #[test]
    fn signers_refuse_every_json_rpc_listener_but_ipc() {
        let dir = tempfile::tempdir().unwrap();
        let ok = signer_args(dir.path()).resolve().unwrap();
        assert!(ok.geth.http.is_none());
        let refused = |args: RunArgs, needle: &str| {
            let err = args.resolve().unwrap_err().to_string();
            assert!(err.contains(needle), "{needle} missing in {err}");
            assert!(err.contains("refused"), "{err}");
        };
        for http in ["127.0.0.1:8545", "0.0.0.0:8545", "[::1]:8545"] {
            let mut args = signer_args(dir.path());
            args.http = Some(http.into());
            refused(args, "http:");
        }
        for flag in [
            "--http",
            "-http",
            "--ws",
            "--http.addr=0.0.0.0",
            "--ws.addr",
            "--http.port=8545",
            "--graphql",
            "--allow-insecure-unlock",
        ] {
            let mut args = signer_args(dir.path());
            args.geth_args = vec![flag.into(), "0.0.0.0".into()];
            refused(args, flag);
        }
        let config = dir.path().join("geth.toml");
        std::fs::write(&config, "[Node]\nHTTPHost = \"0.0.0.0\"\n").unwrap();
        let mut args = signer_args(dir.path());
        args.geth_config = Some(config.clone());
        refused(args, "HTTPHost");
        // A validator may serve HTTP.
        let mut args = signer_args(dir.path());
        args.signer = None;
        args.http = Some("127.0.0.1:8545".into());
        args.geth_config = Some(config);
        assert!(args.resolve().is_ok());
    }

    #[test]
    fn a_london_genesis_needs_a_gas_floor() {
        let dir = tempfile::tempdir().unwrap();
        let mut args = signer_args(dir.path());
        std::fs::write(
            dir.path().join("genesis.json"),
            r#"{"config":{"chainId":1,"londonBlock":0,"clique":{"period":1}}}"#,
        )
        .unwrap();
        let err = args.clone().resolve().unwrap_err().to_string();
        assert!(err.contains("londonBlock"), "{err}");
        args.min_gas_price_wei = Some(1);
        assert!(args.resolve().is_ok());
    }

    #[test]
    fn an_aggregator_needs_the_address_of_its_reply_key() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("genesis.json"), "{}").unwrap();
        std::fs::write(dir.path().join("nodekey"), "00").unwrap();
        let base = || RunArgs {
            datadir: Some(dir.path().join("data")),
            genesis: Some(dir.path().join("genesis.json")),
            nodekey: Some(dir.path().join("nodekey")),
            aggregator: Some("http://127.0.0.1:8080".into()),
            ..RunArgs::default()
        };
        let err = base().resolve().unwrap_err();
        assert_eq!(err.0.len(), 1, "{err}");
        assert!(
            err.0[0].starts_with("aggregator_address: required"),
            "{err}"
        );
        let err = RunArgs {
            aggregator_address: Some("0x12".into()),
            ..base()
        }
        .resolve()
        .unwrap_err();
        assert!(err.0[0].contains("not an address"), "{err}");
        let address = "0x00000000000000000000000000000000000000aa";
        let config = RunArgs {
            aggregator_address: Some(address.into()),
            ..base()
        }
        .resolve()
        .unwrap();
        assert_eq!(config.aggregator_address, Some(address.parse().unwrap()));
        // From the TOML file too.
        let file = dir.path().join("agent.toml");
        std::fs::write(&file, format!("aggregator_address = \"{address}\"\n")).unwrap();
        let config = RunArgs {
            config: Some(file),
            ..base()
        }
        .resolve()
        .unwrap();
        assert_eq!(config.aggregator_address, Some(address.parse().unwrap()));
    }

    #[test]
    fn durability_is_archive_for_signers_by_default_and_sets_gcmode() {
        let dir = tempfile::tempdir().unwrap();
        let signer = signer_args(dir.path()).resolve().unwrap();
        assert_eq!(signer.geth.durability, Durability::Archive);
        assert!(signer.archive());
        let line: Vec<String> = signer
            .geth
            .args()
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert!(
            line.windows(2)
                .any(|w| w[0] == "--gcmode" && w[1] == "archive"),
            "{line:?}"
        );
        let mut validator = signer_args(dir.path());
        validator.signer = None;
        let validator = validator.resolve().unwrap();
        assert_eq!(validator.geth.durability, Durability::Standard);
        assert!(!validator.archive());
        // Chosen explicitly, from a flag or the TOML file.
        let mut args = signer_args(dir.path());
        args.durability = Some("standard".into());
        let config = args.resolve().unwrap();
        assert_eq!(config.geth.durability, Durability::Standard);
        assert!(!config
            .geth
            .args()
            .iter()
            .any(|a| a.to_string_lossy().contains("gcmode")));
        let file = dir.path().join("agent.toml");
        std::fs::write(&file, "durability = \"archive\"\n").unwrap();
        let mut args = signer_args(dir.path());
        args.signer = None;
        args.config = Some(file);
        assert_eq!(args.resolve().unwrap().geth.durability, Durability::Archive);
        assert_eq!(config.rewrite_confirmations, DEFAULT_REWRITE_CONFIRMATIONS);
        // Attach mode: the same default, which `geth-agent geth` applies.
        let mut args = signer_args(dir.path());
        args.mode = Some("attach".into());
        args.geth_log_file = Some(dir.path().join("geth.log"));
        assert_eq!(args.resolve().unwrap().geth.durability, Durability::Archive);
    }

    #[test]
    fn bad_durability_and_a_second_gcmode_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut args = signer_args(dir.path());
        args.durability = Some("full".into());
        args.rewrite_confirmations = Some(0);
        let err = args.resolve().unwrap_err();
        assert_eq!(err.0.len(), 2, "{err}");
        assert!(err.0[0].contains("durability: \"full\""), "{err}");
        assert!(err.0[1].contains("rewrite_confirmations"), "{err}");
        for flags in [
            vec!["--gcmode=archive"],
            vec!["--gcmode", "full"],
            vec!["-gcmode=full"],
        ] {
            let mut args = signer_args(dir.path());
            args.geth_args = flags.iter().map(|f| (*f).to_owned()).collect();
            let err = args.resolve().unwrap_err();
            assert_eq!(err.0.len(), 1, "{err}");
            assert!(err.0[0].contains("durability setting"), "{err}");
        }
    }

    #[test]
    fn unknown_toml_keys_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("agent.toml");
        std::fs::write(&file, "nmae = \"typo\"\n").unwrap();
        let err = RunArgs {
            config: Some(file),
            ..RunArgs::default()
        }
        .resolve()
        .unwrap_err();
        assert!(err.to_string().contains("nmae"), "{err}");
    }
}
