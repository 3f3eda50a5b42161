//! The geth command line: every geth the agent starts stays on loopback (or the
//! configured subnet), logs JSON, and never looks for public peers.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use alloy::primitives::Address;

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
        push("--netrestrict", &self.netrestrict);
        push("--nat", &"none");
        push("--syncmode", &"full");
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
            args.push("--http".into());
            if self.signer.is_some() {
                // geth refuses to unlock an account while HTTP is on without this;
                // HTTP only serves eth/net/web3/txpool/clique on loopback.
                args.push("--allow-insecure-unlock".into());
            }
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
    fn signer_with_http_unlocks_insecurely_only_then() {
        let mut cmd = GethCommand::new("geth".into(), "/d".into());
        cmd.signer = Some(SignerArgs {
            address: Address::repeat_byte(0xab),
            keystore: "/k".into(),
            password_file: "/p".into(),
        });
        assert!(!joined(&cmd).contains("--allow-insecure-unlock"));
        cmd.http = Some("127.0.0.1:8545".parse().unwrap());
        let line = joined(&cmd);
        assert!(line.contains("--allow-insecure-unlock"));
        assert!(line.contains(&format!("--unlock {:#x}", Address::repeat_byte(0xab))));
        assert!(line.contains("--http.port 8545"));
    }
}
