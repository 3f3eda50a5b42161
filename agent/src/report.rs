//! Reporting to the aggregator — always started by the agent (agents may sit
//! behind NAT): each new head at once, the node's stats every 5 s, spooled
//! lifecycle events until acknowledged, and peer discovery every 15 s. Every
//! request is signed with the node's own devp2p key.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use alloy::primitives::{keccak256, B256};
use alloy::signers::local::PrivateKeySigner;
use alloy::signers::SignerSync;
use geth_wire::{
    signing_payload, BlockReport, PeerList, Report, ReportReply, StatsReport, HEADER_NODE,
    HEADER_SIGNATURE, HEADER_TIME,
};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::readiness::{self, ReadinessConfig};
use crate::rpc::GethRpc;
use crate::spool::Spool;
use crate::status::{now_ms, NodeStatus};

const STATS_EVERY: Duration = Duration::from_secs(5);
const SPOOL_EVERY: Duration = Duration::from_secs(1);
const PEERS_EVERY: Duration = Duration::from_secs(15);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("cannot read the node key {path}: {reason}")]
    NodeKey { path: String, reason: String },
    #[error("{0}")]
    Http(String),
    #[error("aggregator answered {status}: {body}")]
    Refused { status: u16, body: String },
}

impl ReportError {
    /// Refused for what was sent (4xx), not for who sent it (401) or when (429):
    /// sending the same again will not help.
    fn refused_for_good(&self) -> bool {
        matches!(self, Self::Refused { status, .. }
            if (400..500).contains(status) && *status != 401 && *status != 429)
    }
}

/// Loads the devp2p node key (64 hex characters) that signs reports.
pub fn load_node_key(path: &Path) -> Result<PrivateKeySigner, ReportError> {
    let bad = |reason: String| ReportError::NodeKey {
        path: path.display().to_string(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
    let bytes: B256 = text
        .trim()
        .trim_start_matches("0x")
        .parse()
        .map_err(|_| bad("not 32 bytes of hex".into()))?;
    PrivateKeySigner::from_bytes(&bytes).map_err(|e| bad(e.to_string()))
}

pub struct Reporter {
    pub base: String,
    pub key: PrivateKeySigner,
    pub status_tx: watch::Sender<NodeStatus>,
    pub heads: mpsc::Receiver<BlockReport>,
    pub spool: Arc<Spool>,
    pub metrics: Arc<Metrics>,
    pub readiness: ReadinessConfig,
    pub ipc: std::path::PathBuf,
    pub agent_version: &'static str,
    client: reqwest::Client,
    started: Instant,
    known_peers: HashMap<String, String>, // node id → enode last added
}

impl Reporter {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        base: &str,
        key: PrivateKeySigner,
        status_tx: watch::Sender<NodeStatus>,
        heads: mpsc::Receiver<BlockReport>,
        spool: Arc<Spool>,
        metrics: Arc<Metrics>,
        readiness: ReadinessConfig,
        ipc: std::path::PathBuf,
    ) -> Self {
        let client = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .build()
            .unwrap_or_default();
        Self {
            base: base.trim_end_matches('/').to_owned(),
            key,
            status_tx,
            heads,
            spool,
            metrics,
            readiness,
            ipc,
            agent_version: env!("CARGO_PKG_VERSION"),
            client,
            started: Instant::now(),
            known_peers: HashMap::new(),
        }
    }

    pub async fn run(mut self, cancel: CancellationToken) {
        let mut stats = tokio::time::interval(STATS_EVERY);
        let mut spool = tokio::time::interval(SPOOL_EVERY);
        let mut peers = tokio::time::interval(PEERS_EVERY);
        for t in [&mut stats, &mut spool, &mut peers] {
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        }
        loop {
            let result = tokio::select! {
                _ = cancel.cancelled() => break,
                Some(head) = self.heads.recv() => self.send(&Report::Block(head)).await.map(|_| ()),
                _ = stats.tick() => self.send_stats().await,
                _ = spool.tick() => self.flush_spool().await,
                _ = peers.tick() => self.discover_peers().await,
            };
            self.metrics.on_spool_depth(self.spool.depth());
            if let Err(e) = result {
                self.metrics.on_report_failure();
                tracing::debug!(error = %e, "report to the aggregator failed");
            }
        }
        // A last try for events recorded during shutdown.
        let _ = tokio::time::timeout(Duration::from_secs(3), self.flush_spool()).await;
    }

    fn sign(&self, body: &[u8]) -> Result<(String, String), ReportError> {
        let time = now_ms();
        let digest = keccak256(signing_payload(time, body));
        let signature = self
            .key
            .sign_hash_sync(&digest)
            .map_err(|e| ReportError::Http(e.to_string()))?;
        Ok((
            time.to_string(),
            format!("0x{}", hex::encode(signature.as_bytes())),
        ))
    }

    async fn send(&self, report: &Report) -> Result<ReportReply, ReportError> {
        let body = serde_json::to_vec(report).map_err(|e| ReportError::Http(e.to_string()))?;
        let (time, signature) = self.sign(&body)?;
        let response = self
            .client
            .post(format!("{}/api/report", self.base))
            .header(HEADER_NODE, format!("{:#x}", self.key.address()))
            .header(HEADER_TIME, time)
            .header(HEADER_SIGNATURE, signature)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .map_err(|e| ReportError::Http(e.to_string()))?;
        let code = response.status();
        let text = response
            .text()
            .await
            .map_err(|e| ReportError::Http(e.to_string()))?;
        if !code.is_success() {
            return Err(ReportError::Refused {
                status: code.as_u16(),
                body: text,
            });
        }
        let reply: ReportReply =
            serde_json::from_str(&text).map_err(|e| ReportError::Http(e.to_string()))?;
        if let Some(reference) = &reply.reference {
            let head = Some(reference.number);
            self.status_tx.send_if_modified(|s| {
                let changed = s.reference_head != head;
                s.reference_head = head;
                changed
            });
        }
        Ok(reply)
    }

    async fn send_stats(&self) -> Result<(), ReportError> {
        let status = self.status_tx.borrow().clone();
        let ready = readiness::evaluate(&status, &self.readiness, status.reference_head, now_ms());
        let stats = StatsReport {
            name: status.name.clone(),
            client: status.client.clone(),
            agent_version: self.agent_version.into(),
            enode: status.enode.clone(),
            peers: status.chain.peers,
            syncing: status.chain.syncing,
            mining: status.mining,
            signer: status.signer.map(|s| format!("{s:#x}")),
            is_signer: status.is_signer,
            pending: status.pending,
            queued: status.queued,
            head: status.chain.head,
            head_hash: status.chain.head_hash.clone(),
            uptime_s: self.started.elapsed().as_secs(),
            ready: ready.ready,
            not_ready: ready
                .conditions
                .iter()
                .filter(|c| !c.ok)
                .map(|c| format!("{}: {} (want {})", c.name, c.value, c.want))
                .collect(),
            phase: format!("{:?}", status.phase).to_lowercase(),
            last_shutdown: status.last_shutdown.clone(),
            blocks_lost_total: status.blocks_lost_total,
            period: status.period,
            min_gas_price_wei: status.gas_price_floor_wei,
            suggested_gas_price_wei: status.suggested_gas_price_wei,
            signers: status
                .signers
                .as_ref()
                .map(|set| set.iter().map(|a| format!("{a:#x}")).collect()),
        };
        self.send(&Report::Stats(Box::new(stats))).await.map(|_| ())
    }

    async fn flush_spool(&self) -> Result<(), ReportError> {
        let events = self.spool.pending(100);
        if events.is_empty() {
            return Ok(());
        }
        let batch = Report::Events {
            events: events.clone(),
        };
        match self.send(&batch).await {
            Ok(reply) => {
                self.spool.ack(&reply.acked);
                Ok(())
            }
            // One refused event must not block the queue: send them one by
            // one and set aside those refused on their own.
            Err(e) if e.refused_for_good() => {
                for event in events {
                    let seq = event.seq;
                    let one = Report::Events {
                        events: vec![event],
                    };
                    match self.send(&one).await {
                        Ok(reply) => self.spool.ack(&reply.acked),
                        Err(e) if e.refused_for_good() => {
                            self.spool.set_aside(seq, &e.to_string());
                            self.metrics.on_event_rejected();
                        }
                        Err(e) => return Err(e),
                    }
                }
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Adds every live peer geth is not connected to; again when its address changes.
    async fn discover_peers(&mut self) -> Result<(), ReportError> {
        let (time, signature) = self.sign(b"")?;
        let response = self
            .client
            .get(format!("{}/api/peers", self.base))
            .header(HEADER_NODE, format!("{:#x}", self.key.address()))
            .header(HEADER_TIME, time)
            .header(HEADER_SIGNATURE, signature)
            .send()
            .await
            .map_err(|e| ReportError::Http(e.to_string()))?;
        if !response.status().is_success() {
            return Err(ReportError::Http(format!("peers: {}", response.status())));
        }
        let list: PeerList = response
            .json()
            .await
            .map_err(|e| ReportError::Http(e.to_string()))?;
        let Ok(rpc) = GethRpc::connect(&self.ipc).await else {
            return Ok(());
        };
        let connected: Vec<serde_json::Value> =
            rpc.call("admin_peers", ()).await.unwrap_or_default();
        let connected_ids: Vec<String> = connected
            .iter()
            .filter_map(|p| p.get("id").and_then(|v| v.as_str()).map(str::to_owned))
            .collect();
        for enode in list.enodes {
            let Some(id) = enode
                .strip_prefix("enode://")
                .and_then(|r| r.split('@').next())
                .map(str::to_owned)
            else {
                continue;
            };
            let moved = self
                .known_peers
                .get(&id)
                .is_some_and(|known| *known != enode);
            let connected = connected_ids.iter().any(|c| enode_id_matches(c, &id));
            if !connected || moved {
                match rpc
                    .call::<_, bool>("admin_addPeer", (enode.as_str(),))
                    .await
                {
                    Ok(_) => tracing::info!(%enode, "peer added from the aggregator"),
                    Err(e) => tracing::debug!(error = %e, "admin_addPeer"),
                }
            }
            self.known_peers.insert(id, enode);
        }
        Ok(())
    }
}

/// `admin_peers` ids are keccak hashes of the public key, enode ids the key itself.
fn enode_id_matches(peer_id: &str, enode_id: &str) -> bool {
    hex::decode(enode_id)
        .map(|key| format!("{:x}", keccak256(key)) == peer_id.trim_start_matches("0x"))
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_key_loads_and_signs_as_its_address() {
        let dir = tempfile::tempdir().unwrap();
        let key = crate::network::NodeKey::random();
        key.write(&dir.path().join("nodekey")).unwrap();
        let signer = load_node_key(&dir.path().join("nodekey")).unwrap();
        let digest = keccak256(signing_payload(1, b"{}"));
        let sig = signer.sign_hash_sync(&digest).unwrap();
        assert_eq!(
            sig.recover_address_from_prehash(&digest).unwrap(),
            signer.address()
        );
        std::fs::write(dir.path().join("bad"), "zz").unwrap();
        assert!(load_node_key(&dir.path().join("bad")).is_err());
        // admin_peers' id is keccak(pubkey) of the enode id.
        let id = key.enode_id();
        let peer_id = format!("{:x}", keccak256(hex::decode(&id).unwrap()));
        assert!(enode_id_matches(&peer_id, &id));
        assert!(!enode_id_matches("00", &id));
    }
}
