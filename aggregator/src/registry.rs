//! Which nodes may report: each node is known by the address of its devp2p node
//! key (derived from its enode id), so only the holder of that key can report
//! as that node. Loaded from a `network.json` written by `geth-agent network new`,
//! plus the nodes an operator admitted later (`geth-aggregator nodes admit`,
//! persisted in the store): joined nodes are not trusted until then.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, RwLock};

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
    /// The nodes of network.json: fixed for the aggregator's life.
    nodes: BTreeMap<Address, KnownNode>,
    /// Nodes admitted at run time (shared by clones of this registry).
    admitted: Arc<RwLock<BTreeMap<Address, KnownNode>>>,
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

    /// A node of network.json or an admitted one.
    pub fn get(&self, address: &Address) -> Option<KnownNode> {
        self.nodes
            .get(address)
            .cloned()
            .or_else(|| self.admitted_nodes().get(address).cloned())
    }

    /// Whether `address` is a node of network.json (not removable).
    pub fn is_listed(&self, address: &Address) -> bool {
        self.nodes.contains_key(address)
    }

    fn admitted_nodes(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<Address, KnownNode>> {
        self.admitted.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Trusts a node from now on (replaces an earlier admission of it).
    pub fn admit(&self, address: Address, node: KnownNode) {
        self.admitted
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(address, node);
    }

    /// Revokes an admission; the node it was, if any.
    pub fn revoke(&self, address: &Address) -> Option<KnownNode> {
        self.admitted
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(address)
    }

    /// The admitted nodes, by address.
    pub fn admitted(&self) -> Vec<(Address, KnownNode)> {
        self.admitted_nodes()
            .iter()
            .map(|(a, n)| (*a, n.clone()))
            .collect()
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

    /// The nodes of network.json.
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

    #[test]
    fn admitted_nodes_are_known_until_revoked_and_listed_ones_stay() {
        let mut registry = Registry::default();
        let listed = Address::repeat_byte(1);
        registry.insert(listed, node("signer-1"));
        let joined = Address::repeat_byte(2);
        assert!(registry.get(&joined).is_none());
        let clone = registry.clone();
        registry.admit(joined, node("joined"));
        assert_eq!(
            clone.get(&joined).unwrap().name,
            "joined",
            "clones share admissions"
        );
        assert!(registry.is_listed(&listed) && !registry.is_listed(&joined));
        assert_eq!(registry.admitted().len(), 1);
        assert_eq!(registry.revoke(&joined).unwrap().name, "joined");
        assert!(registry.get(&joined).is_none());
        assert!(
            registry.revoke(&listed).is_none(),
            "network.json nodes are not revocable"
        );
        assert!(registry.get(&listed).is_some());
    }

    fn node(name: &str) -> KnownNode {
        KnownNode {
            name: name.into(),
            enode: String::new(),
            signer: None,
        }
    }
}
