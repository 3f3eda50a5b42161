//! `geth-agent network new`: writes a complete clique network description —
//! genesis, signer keystores, node keys, per-node geth and agent config.
//!
//! ```text
//! <out>/network.json                  what was generated (nodes, enodes, ports, accounts)
//! <out>/genesis.json
//! <out>/nodes/<name>/config.toml      geth config: loopback ListenAddr, StaticNodes
//! <out>/nodes/<name>/agent.toml       geth-agent config for this node
//! <out>/nodes/<name>/nodekey          devp2p identity (0600)
//! <out>/nodes/<name>/keystore/        signer account, encrypted (signers only)
//! <out>/nodes/<name>/password         keystore password (0600, signers only)
//! <out>/accounts/keystore/, password  funded user accounts
//! <out>/aggregator/key                the aggregator's reply-signing key (0600)
//! ```

pub mod genesis;
pub mod keys;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use alloy::primitives::{Address, U256};
use serde_json::Value;

pub use geth_wire::network::{
    AccountInfo, AggregatorInfo, Durability, Network, NodeInfo, NodePorts, Role,
};
pub use keys::NodeKey;

/// Largest network `network new` writes; clique itself has no hard limit.
pub const MAX_SIGNERS: usize = 64;
pub const MAX_VALIDATORS: usize = 64;

/// Every funded account starts with one million ether.
pub fn initial_balance() -> U256 {
    U256::from(10u64).pow(U256::from(24u64))
}

#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("keystore: {0}")]
    Keystore(String),
    #[error("genesis: {0}")]
    Genesis(String),
    #[error("bad node count: {0}")]
    NodeCount(String),
    #[error("{0} already exists: choose another --out or remove it")]
    Exists(PathBuf),
    #[error("{path}: {reason}")]
    Invalid { path: PathBuf, reason: String },
}

impl NetworkError {
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        Self::Io {
            path: path.to_owned(),
            source,
        }
    }
}

/// Node `i` of a network gets `base + i` for every port.
pub fn sequential_ports(base: NodePorts, count: usize) -> Result<Vec<NodePorts>, NetworkError> {
    (0..count)
        .map(|i| {
            let add = |p: u16| {
                u16::try_from(i)
                    .ok()
                    .and_then(|i| p.checked_add(i))
                    .ok_or_else(|| {
                        NetworkError::NodeCount(format!("port {p} + {i} is beyond 65535"))
                    })
            };
            Ok(NodePorts {
                p2p: add(base.p2p)?,
                http: add(base.http)?,
                agent: add(base.agent)?,
            })
        })
        .collect()
}

/// What to generate.
#[derive(Debug, Clone)]
pub struct NetworkSpec {
    /// Genesis template (one of `genesis::TEMPLATES`, or a custom file's JSON).
    pub template: Value,
    pub name: String,
    /// Clique block period in seconds (0: seal only when there are transactions).
    pub period: u64,
    pub signers: usize,
    pub validators: usize,
    /// Funded user accounts besides the signers.
    pub accounts: usize,
    /// Host or IP that peers use to reach the nodes (enode host).
    pub host: String,
    /// Ports per node, signers first; `signers + validators` entries.
    pub ports: Vec<NodePorts>,
    /// Written into every agent.toml when set (else the agents' per-role default).
    pub durability: Option<Durability>,
}

impl NetworkSpec {
    fn check(&self) -> Result<(), NetworkError> {
        if !(1..=MAX_SIGNERS).contains(&self.signers) {
            return Err(NetworkError::NodeCount(format!(
                "signers must be between 1 and {MAX_SIGNERS}, got {}",
                self.signers
            )));
        }
        if self.validators > MAX_VALIDATORS {
            return Err(NetworkError::NodeCount(format!(
                "validators must be between 0 and {MAX_VALIDATORS}, got {}",
                self.validators
            )));
        }
        let nodes = self.signers + self.validators;
        if self.ports.len() != nodes {
            return Err(NetworkError::NodeCount(format!(
                "{} port sets for {nodes} nodes",
                self.ports.len()
            )));
        }
        let mut seen = std::collections::HashSet::new();
        if let Some(p) = self
            .ports
            .iter()
            .flat_map(NodePorts::all)
            .find(|p| !seen.insert(*p))
        {
            return Err(NetworkError::NodeCount(format!("port {p} is used twice")));
        }
        Ok(())
    }
}

/// Writes the network into `out` (which must not exist yet, or be empty).
pub fn generate(spec: &NetworkSpec, out: &Path) -> Result<Network, NetworkError> {
    spec.check()?;
    genesis::validate(&spec.template)?;
    if out.exists()
        && std::fs::read_dir(out)
            .map_err(|e| NetworkError::io(out, e))?
            .next()
            .is_some()
    {
        return Err(NetworkError::Exists(out.to_owned()));
    }
    let chain_id = genesis::chain_id(&spec.template).expect("validated");

    // Identities first: every node must know every enode before any config is written.
    let mut nodes = Vec::new();
    let mut node_keys = Vec::new();
    for (i, ports) in spec.ports.iter().enumerate() {
        let (role, name) = if i < spec.signers {
            (Role::Signer, format!("signer-{}", i + 1))
        } else {
            (
                Role::Validator,
                format!("validator-{}", i - spec.signers + 1),
            )
        };
        let key = NodeKey::random();
        let enode = format!("enode://{}@{}:{}", key.enode_id(), spec.host, ports.p2p);
        let dir = Network::node_dir(out, &name);
        mkdir(&dir)?;
        key.write(&dir.join("nodekey"))?;
        let signer = if role == Role::Signer {
            let password = keys::random_password();
            let (address, _) = keys::new_keystore_account(&dir.join("keystore"), &password)?;
            keys::write_secret(&dir.join("password"), password.as_bytes())?;
            Some(address)
        } else {
            None
        };
        node_keys.push(key);
        nodes.push(NodeInfo {
            name,
            role,
            signer,
            enode,
            ports: *ports,
        });
    }

    let accounts_dir = out.join("accounts");
    mkdir(&accounts_dir)?;
    let password = keys::random_password();
    keys::write_secret(&accounts_dir.join("password"), password.as_bytes())?;
    let mut accounts = Vec::new();
    for _ in 0..spec.accounts {
        let (address, file) =
            keys::new_keystore_account(&accounts_dir.join("keystore"), &password)?;
        let keystore = file.strip_prefix(out).unwrap_or(&file).to_owned();
        accounts.push(AccountInfo { address, keystore });
    }

    // The aggregator signs its replies with a key of its own; agents learn its address.
    let aggregator_dir = out.join("aggregator");
    mkdir(&aggregator_dir)?;
    let aggregator_key = NodeKey::random();
    aggregator_key.write(&aggregator_dir.join("key"))?;
    let aggregator = AggregatorInfo {
        address: aggregator_key.address(),
        key: PathBuf::from("aggregator").join("key"),
    };

    let signers: Vec<Address> = nodes.iter().filter_map(|n| n.signer).collect();
    let funded: Vec<(Address, U256)> = signers
        .iter()
        .chain(accounts.iter().map(|a| &a.address))
        .map(|a| (*a, initial_balance()))
        .collect();
    let genesis = genesis::build(&spec.template, spec.period, &signers, &funded)?;
    write(&out.join("genesis.json"), &pretty(&genesis))?;

    for node in &nodes {
        let dir = Network::node_dir(out, &node.name);
        let peers: Vec<&str> = nodes
            .iter()
            .filter(|n| n.name != node.name)
            .map(|n| n.enode.as_str())
            .collect();
        write(&dir.join("config.toml"), &geth_config_toml(node, &peers))?;
        let other_signers = signers.len() - usize::from(node.role == Role::Signer);
        write(
            &dir.join("agent.toml"),
            &agent_toml(node, other_signers, &aggregator, spec.durability),
        )?;
    }

    let network = Network {
        name: spec.name.clone(),
        chain_id,
        period: spec.period,
        nodes,
        accounts,
        aggregator: Some(aggregator),
        durability: spec.durability,
    };
    let json = serde_json::to_value(&network).expect("network serialises");
    write(&out.join(Network::FILE), &pretty(&json))?;
    Ok(network)
}

/// geth's `--config` TOML. Unknown keys are fatal to geth, so only well-known ones.
fn geth_config_toml(node: &NodeInfo, peers: &[&str]) -> String {
    let mut toml = String::from("# geth v1.13 node config, written by `geth-agent network new`.\n");
    toml.push_str("[Node.P2P]\n");
    let _ = writeln!(toml, "ListenAddr = \"127.0.0.1:{}\"", node.ports.p2p);
    toml.push_str("NoDiscovery = true\n");
    toml.push_str("StaticNodes = [\n");
    for peer in peers {
        let _ = writeln!(toml, "  \"{peer}\",");
    }
    toml.push_str("]\n");
    toml
}

/// The node's geth-agent config; paths are relative to this file's folder.
fn agent_toml(
    node: &NodeInfo,
    other_signers: usize,
    aggregator: &AggregatorInfo,
    durability: Option<Durability>,
) -> String {
    let mut toml =
        String::from("# geth-agent config for this node, written by `geth-agent network new`.\n");
    toml.push_str("# Paths are relative to this file. The datadir is given at run time.\n");
    let _ = writeln!(toml, "name = \"{}\"", node.name);
    let _ = writeln!(toml, "aggregator_address = \"{:#x}\"", aggregator.address);
    toml.push_str("genesis = \"../../genesis.json\"\n");
    toml.push_str("geth_config = \"config.toml\"\n");
    toml.push_str("nodekey = \"nodekey\"\n");
    if node.signer.is_none() {
        // Users' JSON-RPC. Signers serve none: their account is unlocked.
        let _ = writeln!(toml, "http = \"127.0.0.1:{}\"", node.ports.http);
    }
    let _ = writeln!(toml, "listen = \"127.0.0.1:{}\"", node.ports.agent);
    if let Some(durability) = durability {
        let _ = writeln!(toml, "durability = \"{durability}\"");
    }
    if let Some(signer) = node.signer {
        toml.push_str("keystore = \"keystore\"\n");
        toml.push_str("password_file = \"password\"\n");
        let _ = writeln!(toml, "signer = \"{signer:#x}\"");
        // Start sealing once the other signers are peered: sealing alone forks block 1.
        let _ = writeln!(toml, "mine_min_peers = {other_signers}");
    }
    toml
}

fn pretty(value: &Value) -> String {
    let mut text = serde_json::to_string_pretty(value).expect("JSON value serialises");
    text.push('\n');
    text
}

fn mkdir(dir: &Path) -> Result<(), NetworkError> {
    std::fs::create_dir_all(dir).map_err(|e| NetworkError::io(dir, e))
}

fn write(path: &Path, text: &str) -> Result<(), NetworkError> {
    std::fs::write(path, text).map_err(|e| NetworkError::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(signers: usize, validators: usize) -> NetworkSpec {
        let base = NodePorts {
            p2p: 30303,
            http: 8545,
            agent: 9101,
        };
        NetworkSpec {
            template: serde_json::from_str(genesis::TEMPLATES[0].text).unwrap(),
            name: "test".into(),
            period: 1,
            signers,
            validators,
            accounts: 1,
            host: "127.0.0.1".into(),
            ports: sequential_ports(base, signers + validators).unwrap(),
            durability: None,
        }
    }

    #[test]
    fn writes_a_complete_network() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("net");
        let network = generate(&spec(3, 1), &out).unwrap();
        assert_eq!(network.nodes.len(), 4);
        assert_eq!(network.signers().count(), 3);
        assert_eq!(network, Network::load(&out).unwrap());

        let genesis: Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("genesis.json")).unwrap())
                .unwrap();
        let extra = genesis["extraData"].as_str().unwrap();
        assert_eq!(extra.len(), 2 + 2 * (32 + 3 * 20 + 65));
        for signer in network.signers() {
            let addr = signer.signer.unwrap();
            assert!(extra.contains(&hex::encode(addr)));
            assert!(genesis["alloc"].get(format!("{addr:#x}")).is_some());
            let node = Network::node_dir(&out, &signer.name);
            assert!(node.join("password").exists());
            let agent = std::fs::read_to_string(node.join("agent.toml")).unwrap();
            assert!(!agent.contains("http"), "a signer serves no HTTP: {agent}");
            assert_eq!(std::fs::read_dir(node.join("keystore")).unwrap().count(), 1);
        }
        let v = Network::node_dir(&out, "validator-1");
        let config = std::fs::read_to_string(v.join("config.toml")).unwrap();
        assert!(config.contains("ListenAddr = \"127.0.0.1:30306\""));
        assert_eq!(config.matches("enode://").count(), 3, "{config}");
        assert!(!v.join("keystore").exists());
        let agent = std::fs::read_to_string(v.join("agent.toml")).unwrap();
        assert!(!agent.contains("signer"), "{agent}");
        assert!(agent.contains("http = \"127.0.0.1:8548\""), "{agent}");
        let mode = std::fs::metadata(v.join("nodekey")).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(mode.permissions().mode() & 0o777, 0o600);

        // The aggregator's reply key: secret file, address published to every agent.
        let aggregator = network.aggregator.as_ref().expect("aggregator key");
        assert_eq!(aggregator.key, Path::new("aggregator/key"));
        let key_file = out.join(&aggregator.key);
        let mode = std::fs::metadata(&key_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let signer = crate::report::load_node_key(&key_file).unwrap();
        assert_eq!(signer.address(), aggregator.address);
        for node in &network.nodes {
            let agent =
                std::fs::read_to_string(Network::node_dir(&out, &node.name).join("agent.toml"))
                    .unwrap();
            assert!(
                agent.contains(&format!(
                    "aggregator_address = \"{:#x}\"",
                    aggregator.address
                )),
                "{agent}"
            );
        }
    }

    #[test]
    fn a_chosen_durability_reaches_every_agent_toml_and_network_json() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("net");
        let mut spec = spec(1, 1);
        spec.durability = Some(Durability::Standard);
        let network = generate(&spec, &out).unwrap();
        assert_eq!(network.durability, Some(Durability::Standard));
        assert_eq!(Network::load(&out).unwrap(), network);
        for node in &network.nodes {
            let agent =
                std::fs::read_to_string(Network::node_dir(&out, &node.name).join("agent.toml"))
                    .unwrap();
            assert!(agent.contains("durability = \"standard\""), "{agent}");
        }
        // Unset: nothing written, the agents decide by role.
        let out = dir.path().join("net2");
        generate(&spec_default(), &out).unwrap();
        let agent = std::fs::read_to_string(Network::node_dir(&out, "signer-1").join("agent.toml"))
            .unwrap();
        assert!(!agent.contains("durability"), "{agent}");
    }

    fn spec_default() -> NetworkSpec {
        spec(1, 0)
    }

    #[test]
    fn refuses_bad_counts_and_existing_output() {
        let dir = tempfile::tempdir().unwrap();
        let err = generate(&spec(0, 0), &dir.path().join("a")).unwrap_err();
        assert!(matches!(err, NetworkError::NodeCount(_)), "{err}");
        let err = generate(&spec(MAX_SIGNERS + 1, 0), &dir.path().join("a")).unwrap_err();
        assert!(matches!(err, NetworkError::NodeCount(_)), "{err}");
        std::fs::write(dir.path().join("x"), "").unwrap();
        let err = generate(&spec(1, 0), dir.path()).unwrap_err();
        assert!(matches!(err, NetworkError::Exists(_)), "{err}");
    }

    #[test]
    fn sequential_ports_overflow_is_an_error() {
        let base = NodePorts {
            p2p: 65534,
            http: 1,
            agent: 2,
        };
        assert!(sequential_ports(base, 3).is_err());
    }
}
