//! The geth command line: every geth the agent starts stays on loopback (or the
//! configured subnet), logs JSON, and never looks for public peers.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use alloy::primitives::Address;
pub use geth_wire::network::Durability;

/// The only geth release line the agent drives (the last that seals clique).
pub const SUPPORTED_VERSION: &str = "1.13.15";

/// Finds geth: `$GETH_BIN`, else `geth` on the `PATH`.
pub fn default_binary() -> PathBuf {
    std::env::var_os("GETH_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("geth"))
}

/// Namespaces served over HTTP (IPC serves every namespace to the agent).
pub const HTTP_APIS: &str = "eth,net,web3,txpool,clique";

/// The signer part of a geth command line.
#[derive(Debug, Clone)]
pub struct SignerArgs {
    pub address: Address,
    pub keystore: PathBuf,
    pub password_file: PathBuf,
}

/// Everything needed to start one geth.
#[derive(Debug, Clone)]
pub struct GethCommand {
    pub binary: PathBuf,
    pub datadir: PathBuf,
    /// geth `--config` TOML (ListenAddr, StaticNodes).
    pub config: Option<PathBuf>,
    pub nodekey: Option<PathBuf>,
    pub signer: Option<SignerArgs>,
    pub http: Option<SocketAddr>,
    /// `--netrestrict`: the only networks geth may talk to.
    pub netrestrict: String,
    /// JSON log file (`--log.file`), as in a pod where the agent follows it.
    pub log_file: Option<PathBuf>,
    /// The gas price floor (wei) the agent applies with `miner_setGasPrice`;
    /// also sets what `eth_gasPrice` advises wallets (see [`gas_price_args`]).
    pub min_gas_price_wei: Option<u64>,
    /// `archive` adds `--gcmode archive`; `standard` leaves geth's default.
    pub durability: Durability,
    /// `--networkid`, the genesis chain id. Without it geth takes itself for
    /// a mainnet node and quadruples its default cache (4 GiB).
    pub network_id: Option<u64>,
    /// Appended verbatim.
    pub extra_args: Vec<String>,
}

impl GethCommand {
    pub fn new(binary: PathBuf, datadir: PathBuf) -> Self {
        Self {
            binary,
            datadir,
            config: None,
            nodekey: None,
            signer: None,
            http: None,
            netrestrict: "127.0.0.0/8".into(),
            log_file: None,
            min_gas_price_wei: None,
            durability: Durability::Standard,
            network_id: None,
            extra_args: Vec::new(),
        }
    }

    /// `<datadir>/geth.ipc`, where geth serves every RPC namespace.
    pub fn ipc_path(&self) -> PathBuf {
        self.datadir.join("geth.ipc")
    }

    /// Arguments for `geth` (without the binary).
    pub fn args(&self) -> Vec<OsString> {
        let mut args: Vec<OsString> = Vec::new();
        let mut push = |flag: &str, value: &dyn AsRef<std::ffi::OsStr>| {
            args.push(flag.into());
            args.push(value.as_ref().to_owned());
        };
        push("--datadir", &self.datadir);
        if let Some(config) = &self.config {
            push("--config", config);
        }
        if let Some(nodekey) = &self.nodekey {
            push("--nodekey", nodekey);
        }
        if let Some(id) = self.network_id {
            push("--networkid", &id.to_string());
        }
        push("--netrestrict", &self.netrestrict);
        push("--nat", &"none");
        push("--syncmode", &"full");
        if self.durability == Durability::Archive {
            // Commit every block's state: nothing imported is lost to a power cut.
            push("--gcmode", &"archive");
        }
        push("--log.format", &"json");
        push("--verbosity", &"3");
        // The engine API listener is unused by clique; bind it to loopback on a
        // free port so several nodes share one host.
        push("--authrpc.addr", &"127.0.0.1");
        push("--authrpc.port", &"0");
        if let Some(file) = &self.log_file {
            push("--log.file", file);
        }
        if let Some(http) = self.http {
            push("--http.addr", &http.ip().to_string());
            push("--http.port", &http.port().to_string());
            push("--http.api", &HTTP_APIS);
            if !http.ip().is_loopback() {
                // Reached by a name (a Kubernetes Service, a load balancer):
                // geth's default answers 403 to any Host but localhost, a
                // guard for loopback listeners a browser page could reach.
                push("--http.vhosts", &"*");
            }
        }
        if let Some(floor) = self.min_gas_price_wei {
            for (flag, value) in gas_price_args(floor) {
                push(flag, &value);
            }
        }
        if let Some(signer) = &self.signer {
            let address = format!("{:#x}", signer.address);
            push("--keystore", &signer.keystore);
            push("--miner.etherbase", &address);
            push("--unlock", &address);
            push("--password", &signer.password_file);
        }
        args.push("--nodiscover".into());
        if self.http.is_some() {
            // Never with --allow-insecure-unlock: geth then refuses to start a
            // signer (unlocked account) with HTTP, a second guard behind the
            // configuration check.
            args.push("--http".into());
        }
        args.extend(self.extra_args.iter().map(OsString::from));
        args
    }

    /// `geth init` for this datadir.
    pub fn init_args(&self, genesis: &Path) -> Vec<OsString> {
        vec![
            "--datadir".into(),
            self.datadir.clone().into(),
            "--log.format".into(),
            "json".into(),
            "init".into(),
            genesis.into(),
        ]
    }
}

/// geth flags so that `eth_gasPrice` advises wallets the floor: the oracle
/// starts from `--miner.gasprice` and never answers above `--gpo.maxprice`.
/// geth raises either of them from 0 (to 1 gwei and 500 gwei), so a zero floor
/// advises 1 wei, the lowest answer geth gives.
pub fn gas_price_args(floor_wei: u64) -> [(&'static str, String); 2] {
    let advised = floor_wei.max(1).to_string();
    [
        ("--miner.gasprice", advised.clone()),
        ("--gpo.maxprice", advised),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn joined(cmd: &GethCommand) -> String {
        cmd.args()
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[test]
    fn always_stays_on_loopback() {
        let cmd = GethCommand::new("geth".into(), "/d".into());
        let line = joined(&cmd);
        for flag in [
            "--nodiscover",
            "--nat none",
            "--netrestrict 127.0.0.0/8",
            "--log.format json",
        ] {
            assert!(line.contains(flag), "{flag} missing in {line}");
        }
        assert!(
            !line.contains("--mine"),
            "sealing starts over IPC, not by flag: {line}"
        );
    }

    #[test]
    fn a_signer_is_never_unlocked_insecurely() {
        let mut cmd = GethCommand::new("geth".into(), "/d".into());
        cmd.signer = Some(SignerArgs {
            address: Address::repeat_byte(0xab),
            keystore: "/k".into(),
            password_file: "/p".into(),
        });
        let line = joined(&cmd);
        assert!(line.contains(&format!("--unlock {:#x}", Address::repeat_byte(0xab))));
        assert!(!line.contains("--http"), "{line}");
        // Even if HTTP were set, geth must refuse to unlock: no --allow-insecure-unlock.
        cmd.http = Some("127.0.0.1:8545".parse().unwrap());
        assert!(!joined(&cmd).contains("--allow-insecure-unlock"));
    }

    #[test]
    fn http_on_a_pod_address_answers_any_host_name() {
        let mut cmd = GethCommand::new("geth".into(), "/d".into());
        cmd.http = Some("127.0.0.1:8545".parse().unwrap());
        assert!(
            !joined(&cmd).contains("--http.vhosts"),
            "loopback keeps the guard"
        );
        cmd.http = Some("0.0.0.0:8545".parse().unwrap());
        assert!(joined(&cmd).contains("--http.vhosts *"));
    }

    #[test]
    fn the_chain_id_is_the_network_id() {
        let mut cmd = GethCommand::new("geth".into(), "/d".into());
        assert!(!joined(&cmd).contains("--networkid"));
        cmd.network_id = Some(1337);
        assert!(joined(&cmd).contains("--networkid 1337"));
    }

    #[test]
    fn archive_durability_sets_the_gc_mode() {
        let mut cmd = GethCommand::new("geth".into(), "/d".into());
        assert!(!joined(&cmd).contains("--gcmode"), "geth's default");
        cmd.durability = Durability::Archive;
        assert!(joined(&cmd).contains("--gcmode archive"));
    }

    #[test]
    fn the_gas_floor_sets_what_geth_advises() {
        let mut cmd = GethCommand::new("geth".into(), "/d".into());
        assert!(!joined(&cmd).contains("--gpo.maxprice"));
        cmd.min_gas_price_wei = Some(0);
        let line = joined(&cmd);
        assert!(
            line.contains("--miner.gasprice 1 --gpo.maxprice 1"),
            "{line}"
        );
        cmd.min_gas_price_wei = Some(5_000_000_000);
        let line = joined(&cmd);
        assert!(line.contains("--gpo.maxprice 5000000000"), "{line}");
    }
}
