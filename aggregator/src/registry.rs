//! Which nodes may report: each node is known by the address of its devp2p node
//! key (derived from its enode id), so only the holder of that key can report
//! as that node. Loaded from a `network.json` written by `geth-agent network new`.

use std::collections::BTreeMap;
use std::path::Path;

use alloy::primitives::{keccak256, Address};
use geth_wire::network::Network;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownNode {
    pub name: String,
    pub enode: String,
    /// The clique signer account, for signer nodes.
    pub signer: Option<Address>,
}

#[derive(Debug, Clone, Default)]
pub struct Registry {
    nodes: BTreeMap<Address, KnownNode>,
}

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("{path}: {reason}")]
    Invalid { path: String, reason: String },
}

/// The address of the key behind an `enode://<128 hex>@…` URL.
pub fn enode_address(enode: &str) -> Option<Address> {
    let id = enode.strip_prefix("enode://")?.split('@').next()?;
    let public = hex::decode(id).ok().filter(|b| b.len() == 64)?;
    Some(Address::from_slice(&keccak256(&public)[12..]))
}

impl Registry {
    /// The nodes of `network` (read from `path`, named in errors).
    pub fn from_network(network: &Network, path: &Path) -> Result<Self, RegistryError> {
        let invalid = |reason: String| RegistryError::Invalid {
            path: path.display().to_string(),
            reason,
        };
        let mut registry = Registry::default();
        for node in network.nodes.iter().cloned() {
            let address = enode_address(&node.enode)
                .ok_or_else(|| invalid(format!("node {}: bad enode {}", node.name, node.enode)))?;
            registry.nodes.insert(
                address,
                KnownNode {
                    name: node.name,
                    enode: node.enode,
                    signer: node.signer,
                },
            );
        }
        Ok(registry)
    }

    pub fn get(&self, address: &Address) -> Option<&KnownNode> {
        self.nodes.get(address)
    }

    pub fn insert(&mut self, address: Address, node: KnownNode) {
        self.nodes.insert(address, node);
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&Address, &KnownNode)> {
        self.nodes.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enode_address_is_the_node_keys_address() {
        use alloy::signers::local::PrivateKeySigner;
        let key = PrivateKeySigner::random();
        let point = key.credential().verifying_key().to_encoded_point(false);
        let enode = format!(
            "enode://{}@127.0.0.1:30303",
            hex::encode(&point.as_bytes()[1..])
        );
        assert_eq!(enode_address(&enode), Some(key.address()));
        assert_eq!(enode_address("enode://abcd@x:1"), None);
        assert_eq!(enode_address("http://x"), None);
    }
}
