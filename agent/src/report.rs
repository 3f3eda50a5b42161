//! Reporting to the aggregator — always started by the agent (agents may sit
//! behind NAT): each new head at once, the node's stats every 5 s, spooled
//! lifecycle events until acknowledged, and peer discovery every 15 s. The
//! first request is signed with the node's own devp2p key and its reply must be
//! signed by the aggregator's key for that request; from then on both sides
//! MAC under the key they share (`geth_wire::session`), and a reply must carry
//! the session MAC for its request. A reply that is not proven is ignored.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use alloy::primitives::{keccak256, Address, Signature, B256};
use alloy::signers::local::PrivateKeySigner;
use alloy::signers::SignerSync;
use geth_wire::limit::KeyedLimiter;
use geth_wire::session::{PublicKey, SessionKey, HEADER_MAC, HEADER_REPLY_MAC, NO_SESSION};
use geth_wire::{
    reply_signing_payload, signing_payload, BlockRef, BlockReport, Event, EventKind, PeerList,
    Report, ReportReply, StatsReport, HEADER_NODE, HEADER_REPLY_SIGNATURE, HEADER_SIGNATURE,
    HEADER_TIME,
};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::commands::Executor;
use crate::metrics::Metrics;
use crate::readiness::{self, ReadinessConfig};
use crate::rpc::GethRpc;
use crate::spool::Spool;
use crate::status::{now_ms, NodeStatus};

const STATS_EVERY: Duration = Duration::from_secs(5);
const SPOOL_EVERY: Duration = Duration::from_secs(1);
/// Longest time a stopping agent keeps sending the events still spooled.
const FINAL_FLUSH: Duration = Duration::from_secs(5);
const PEERS_EVERY: Duration = Duration::from_secs(15);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait for geth's hash at the reference height.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(2);
/// The same kind of report failure is logged at most this often.
const WARN_EVERY: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("cannot read the node key {path}: {reason}")]
    NodeKey { path: String, reason: String },
    #[error("cannot sign the request: {0}")]
    Sign(String),
    #[error("aggregator unreachable: {0}")]
    Unreachable(String),
    #[error("aggregator refused the request ({status}): {reason}")]
    Refused { status: u16, reason: String },
    #[error("aggregator reply ignored: {0}")]
    Reply(#[from] ReplyRejected),
    #[error("aggregator reply unreadable: {0}")]
    Decode(String),
}

impl ReportError {
    /// Refused for what was sent (4xx), not for who sent it (401) or when (429):
    /// sending the same again will not help.
    fn refused_for_good(&self) -> bool {
        matches!(self, Self::Refused { status, .. }
            if (400..500).contains(status) && *status != 401 && *status != 429)
    }

    /// A stable name for the kind of failure, for rate-limited logging.
    fn kind(&self) -> String {
        match self {
            Self::NodeKey { .. } => "node key".into(),
            Self::Sign(_) => "sign".into(),
            Self::Unreachable(_) => "unreachable".into(),
            Self::Refused { status, .. } => format!("refused {status}"),
            Self::Reply(r) => format!("reply {}", r.reason()),
            Self::Decode(_) => "decode".into(),
        }
    }
}

/// Why a reply was not trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ReplyRejected {
    #[error("no {HEADER_REPLY_SIGNATURE} header")]
    Unsigned,
    #[error("{HEADER_REPLY_SIGNATURE} is not a 65-byte hex signature")]
    Malformed,
    /// Signed by another key, or for another request.
    #[error("not signed by the aggregator's key for this request")]
    Foreign,
}

impl ReplyRejected {
    /// The metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Unsigned => "unsigned",
            Self::Malformed => "malformed",
            Self::Foreign => "foreign",
        }
    }
}

/// Checks that `body` was signed by `aggregator` in answer to the request
/// whose own signature was `request_signature`; returns the aggregator's
/// public key (for the session key).
pub fn verify_reply(
    aggregator: Address,
    request_signature: &str,
    header: Option<&str>,
    body: &[u8],
) -> Result<PublicKey, ReplyRejected> {
    let header = header.ok_or(ReplyRejected::Unsigned)?;
    let bytes = header
        .strip_prefix("0x")
        .and_then(|h| hex::decode(h).ok())
        .filter(|b| b.len() == 65)
        .ok_or(ReplyRejected::Malformed)?;
    let signature = Signature::try_from(bytes.as_slice()).map_err(|_| ReplyRejected::Malformed)?;
    let digest = keccak256(reply_signing_payload(request_signature, body));
    match signature.recover_from_prehash(&digest) {
        Ok(key) if Address::from_public_key(&key) == aggregator => Ok(PublicKey::from(key)),
        _ => Err(ReplyRejected::Foreign),
    }
}

/// Checks the session MAC of a reply to the request that carried `request_mac`.
fn verify_reply_mac(
    key: &SessionKey,
    request_mac: &str,
    header: Option<&str>,
    body: &[u8],
) -> Result<(), ReplyRejected> {
    let header = header.ok_or(ReplyRejected::Unsigned)?;
    let well_formed = header.len() == 66
        && header.starts_with("0x")
        && header[2..].bytes().all(|b| b.is_ascii_hexdigit());
    if !well_formed {
        return Err(ReplyRejected::Malformed);
    }
    if key.verify_reply(request_mac, body, header) {
        Ok(())
    } else {
        Err(ReplyRejected::Foreign)
    }
}

/// Request times (`x-geth-time`, Unix ms) strictly increasing across every
/// request of this agent, even several within one millisecond: the aggregator
/// refuses a time that is not newer than the last it accepted from this node.
#[derive(Default)]
struct RequestClock {
    last: AtomicU64,
}

impl RequestClock {
    fn next(&self, now_ms: u64) -> u64 {
        let mut time = now_ms;
        let _ = self
            .last
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |last| {
                time = now_ms.max(last.saturating_add(1));
                Some(time)
            });
        time
    }
}

/// A signed request's headers.
struct Signed {
    time: String,
    signature: String,
}

/// What came back for one request.
struct Answer {
    status: reqwest::StatusCode,
    /// The reply's signature or MAC header.
    seal: Option<String>,
    body: Vec<u8>,
}

impl Answer {
    /// The body of a success; else the aggregator's refusal.
    fn accepted(self) -> Result<Self, ReportError> {
        if self.status.is_success() {
            Ok(self)
        } else {
            Err(ReportError::Refused {
                status: self.status.as_u16(),
                reason: refusal_reason(&self.body),
            })
        }
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
    /// The only key whose replies are trusted.
    pub aggregator: Address,
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
    /// Hashes of the heads reported: the own hash at a recent reference height
    /// without asking geth.
    recent: crate::monitor::RecentHashes,
    clock: RequestClock,
    /// Each kind of failure is logged at most once per [`WARN_EVERY`].
    warnings: Mutex<KeyedLimiter<String>>,
    /// Runs the commands of verified replies (none: commands are ignored).
    commands: Option<Arc<Executor>>,
    /// Readiness in the last stats sent: a change is reported with the next
    /// head instead of waiting for the stats tick (a restart step waits on it).
    last_ready: Mutex<Option<bool>>,
    /// The key shared with the aggregator, from its first signed reply.
    session: Mutex<Option<SessionKey>>,
}

impl Reporter {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        base: &str,
        key: PrivateKeySigner,
        aggregator: Address,
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
            aggregator,
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
            recent: Default::default(),
            clock: RequestClock::default(),
            warnings: Mutex::new(KeyedLimiter::new(WARN_EVERY, 64)),
            commands: None,
            last_ready: Mutex::new(None),
            session: Mutex::new(None),
        }
    }

    /// Runs the aggregator's commands (from verified replies only) with `executor`.
    pub fn with_commands(mut self, executor: Arc<Executor>) -> Self {
        self.commands = Some(executor);
        self
    }

    /// Reports until `stop`; then sends what is still spooled (within
    /// [`FINAL_FLUSH`]). `stop` comes after the supervisor has returned, so the
    /// verdict of a shutdown is in the spool by then.
    pub async fn run(mut self, stop: CancellationToken) {
        let recorded = self.spool.clone();
        let mut stats = tokio::time::interval(STATS_EVERY);
        let mut spool = tokio::time::interval(SPOOL_EVERY);
        let mut peers = tokio::time::interval(PEERS_EVERY);
        for t in [&mut stats, &mut spool, &mut peers] {
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        }
        loop {
            let result = tokio::select! {
                _ = stop.cancelled() => break,
                _ = recorded.pushed() => self.flush_spool().await,
                Some(head) = self.heads.recv() => {
                    self.recent.record(&head);
                    match self.send(&Report::Block(head)).await {
                        Ok(_) if self.readiness_changed() => self.send_stats().await,
                        other => other.map(|_| ()),
                    }
                }
                _ = stats.tick() => self.send_stats().await,
                _ = spool.tick() => self.flush_spool().await,
                _ = peers.tick() => self.discover_peers().await,
            };
            self.metrics.on_spool_depth(self.spool.depth());
            if let Err(e) = result {
                self.on_failure(&e);
            }
        }
        // A last try for events recorded during shutdown (a verdict above all).
        let deadline = Instant::now() + FINAL_FLUSH;
        loop {
            let left = self.spool.depth();
            if left == 0 || Instant::now() >= deadline {
                break;
            }
            match tokio::time::timeout_at(deadline, self.flush_spool()).await {
                // Nothing acknowledged: another try would send the same.
                Ok(Ok(())) if self.spool.depth() >= left => break,
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, left = self.spool.depth(), "events not delivered before exit: they stay spooled for the next agent");
                    break;
                }
                Err(_) => break,
            }
        }
    }

    /// Counts a failed exchange and warns about it, once a minute per kind.
    fn on_failure(&self, e: &ReportError) {
        match e {
            ReportError::Reply(r) => self.metrics.on_reply_rejected(r.reason()),
            _ => self.metrics.on_report_failure(),
        }
        let warn = self
            .warnings
            .lock()
            .map(|mut w| w.due(e.kind(), Instant::now().into_std()))
            .unwrap_or(true);
        if warn {
            tracing::warn!(error = %e, "report to the aggregator failed (same failures muted for a minute)");
        } else {
            tracing::debug!(error = %e, "report to the aggregator failed");
        }
    }

    fn sign(&self, body: &[u8]) -> Result<Signed, ReportError> {
        let time = self.clock.next(now_ms());
        let digest = keccak256(signing_payload(time, body));
        let signature = self
            .key
            .sign_hash_sync(&digest)
            .map_err(|e| ReportError::Sign(e.to_string()))?;
        Ok(Signed {
            time: time.to_string(),
            signature: format!("0x{}", hex::encode(signature.as_bytes())),
        })
    }

    /// Sends a request and returns the reply body once it is proven to be
    /// the aggregator's answer to this very request: MAC'd within a session,
    /// else signed (which opens the session). An aggregator that lost the
    /// session (restarted) is asked again at once, signed.
    async fn exchange(
        &self,
        request: reqwest::RequestBuilder,
        body: &[u8],
    ) -> Result<Vec<u8>, ReportError> {
        let session = self
            .session
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let Some(key) = session else {
            return self.exchange_signed(request, body).await;
        };
        // The body is bytes, so the request can always be cloned.
        let again = request.try_clone();
        match self.exchange_mac(request, body, &key).await? {
            Some(reply) => Ok(reply),
            None => {
                tracing::debug!("the aggregator has no session with this node: signing again");
                *self.session.lock().unwrap_or_else(|e| e.into_inner()) = None;
                match again {
                    Some(request) => self.exchange_signed(request, body).await,
                    None => Err(ReportError::Refused {
                        status: 401,
                        reason: "no session".into(),
                    }),
                }
            }
        }
    }

    /// Sends one request with its node, time and proof headers.
    async fn post(
        &self,
        request: reqwest::RequestBuilder,
        time: &str,
        proof: (&str, &str),
        seal_header: &str,
    ) -> Result<Answer, ReportError> {
        let response = request
            .header(HEADER_NODE, format!("{:#x}", self.key.address()))
            .header(HEADER_TIME, time)
            .header(proof.0, proof.1)
            .send()
            .await
            .map_err(|e| ReportError::Unreachable(e.to_string()))?;
        let status = response.status();
        let seal = response
            .headers()
            .get(seal_header)
            .map(|v| v.to_str().unwrap_or_default().to_owned());
        let body = response
            .bytes()
            .await
            .map_err(|e| ReportError::Unreachable(e.to_string()))?;
        Ok(Answer {
            status,
            seal,
            body: body.to_vec(),
        })
    }

    async fn exchange_signed(
        &self,
        request: reqwest::RequestBuilder,
        body: &[u8],
    ) -> Result<Vec<u8>, ReportError> {
        let signed = self.sign(body)?;
        let answer = self
            .post(
                request,
                &signed.time,
                (HEADER_SIGNATURE, &signed.signature),
                HEADER_REPLY_SIGNATURE,
            )
            .await?
            .accepted()?;
        let aggregator = verify_reply(
            self.aggregator,
            &signed.signature,
            answer.seal.as_deref(),
            &answer.body,
        )?;
        let key = SessionKey::derive(self.key.credential().as_nonzero_scalar(), &aggregator);
        *self.session.lock().unwrap_or_else(|e| e.into_inner()) = Some(key);
        Ok(answer.body)
    }

    /// `None`: the aggregator has no session with this node.
    async fn exchange_mac(
        &self,
        request: reqwest::RequestBuilder,
        body: &[u8],
        key: &SessionKey,
    ) -> Result<Option<Vec<u8>>, ReportError> {
        let time = self.clock.next(now_ms());
        let mac = key.request_mac(time, body);
        let answer = self
            .post(
                request,
                &time.to_string(),
                (HEADER_MAC, &mac),
                HEADER_REPLY_MAC,
            )
            .await?;
        if answer.status == reqwest::StatusCode::UNAUTHORIZED
            && refusal_label(&answer.body).as_deref() == Some(NO_SESSION)
        {
            return Ok(None);
        }
        let answer = answer.accepted()?;
        verify_reply_mac(key, &mac, answer.seal.as_deref(), &answer.body)?;
        Ok(Some(answer.body))
    }

    async fn send(&self, report: &Report) -> Result<ReportReply, ReportError> {
        let body = serde_json::to_vec(report).map_err(|e| ReportError::Sign(e.to_string()))?;
        let request = self
            .client
            .post(format!("{}/api/report", self.base))
            .header("content-type", "application/json")
            .body(body.clone());
        let bytes = self.exchange(request, &body).await?;
        let reply: ReportReply =
            serde_json::from_slice(&bytes).map_err(|e| ReportError::Decode(e.to_string()))?;
        // Started in their own tasks: the reports go on while geth restarts.
        if let (Some(executor), false) = (&self.commands, reply.commands.is_empty()) {
            executor.accept(&reply.commands, now_ms());
        }
        if let Some(reference) = &reply.reference {
            self.take_reference(reference).await;
        }
        if reply.fleet_head.is_some() {
            self.status_tx.send_if_modified(|s| {
                std::mem::replace(&mut s.fleet_head, reply.fleet_head) != reply.fleet_head
            });
        }
        Ok(reply)
    }

    /// Records the fleet's reference block with this node's own hash at that
    /// height, read from geth now, so the sync gate can tell a side branch.
    async fn take_reference(&self, reference: &BlockRef) {
        let head = self.status_tx.borrow().chain.head;
        let own = if head.is_some_and(|h| h >= reference.number) {
            self.hash_at(reference.number).await
        } else {
            None
        };
        self.status_tx.send_if_modified(|s| {
            let changed = s.reference.as_ref() != Some(reference) || s.hash_at_reference != own;
            s.reference_head = Some(reference.number);
            s.reference = Some(reference.clone());
            s.hash_at_reference = own;
            changed
        });
    }

    /// The canonical block hash geth holds at `number`, if any. Bounded in
    /// time: a geth that does not answer must not stall the reports.
    async fn hash_at(&self, number: u64) -> Option<String> {
        if let Some(hash) = self.recent.get(number) {
            return Some(hash.to_owned());
        }
        let lookup = async {
            let rpc = GethRpc::connect(&self.ipc).await.ok()?;
            let block: Option<serde_json::Value> = rpc
                .call("eth_getBlockByNumber", (format!("{number:#x}"), false))
                .await
                .ok()?;
            block?.get("hash")?.as_str().map(str::to_owned)
        };
        tokio::time::timeout(LOOKUP_TIMEOUT, lookup)
            .await
            .ok()
            .flatten()
    }

    /// The aggregator shows a node whose geth shutdown it has just taken as
    /// not ready until newer stats: readiness regained since then is news, to
    /// be sent with the next block (a rolling restart waits for it).
    fn shown_not_ready_after(&self, events: &[Event], acked: &[u64]) {
        let shutdown_acked = events
            .iter()
            .any(|e| matches!(e.kind, EventKind::Shutdown { .. }) && acked.contains(&e.seq));
        if shutdown_acked {
            *self.last_ready.lock().unwrap_or_else(|e| e.into_inner()) = Some(false);
        }
    }

    /// Readiness now differs from the last stats sent.
    fn readiness_changed(&self) -> bool {
        let status = self.status_tx.borrow().clone();
        let ready = readiness::evaluate(&status, &self.readiness, status.reference_head, now_ms());
        let last = *self.last_ready.lock().unwrap_or_else(|e| e.into_inner());
        last.is_some_and(|l| l != ready.ready)
    }

    async fn send_stats(&self) -> Result<(), ReportError> {
        let status = self.status_tx.borrow().clone();
        let ready = readiness::evaluate(&status, &self.readiness, status.reference_head, now_ms());
        *self.last_ready.lock().unwrap_or_else(|e| e.into_inner()) = Some(ready.ready);
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
                self.shown_not_ready_after(&events, &reply.acked);
                Ok(())
            }
            // One refused event must not block the queue: send them one by
            // one and set aside those refused on their own.
            Err(e) if e.refused_for_good() => {
                for event in &events {
                    let seq = event.seq;
                    let one = Report::Events {
                        events: vec![event.clone()],
                    };
                    match self.send(&one).await {
                        Ok(reply) => {
                            self.spool.ack(&reply.acked);
                            self.shown_not_ready_after(std::slice::from_ref(event), &reply.acked);
                        }
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
        let request = self.client.get(format!("{}/api/peers", self.base));
        let bytes = self.exchange(request, b"").await?;
        let list: PeerList =
            serde_json::from_slice(&bytes).map_err(|e| ReportError::Decode(e.to_string()))?;
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

/// The aggregator's `{"error": "..."}` reason, else the body's first 200 characters.
fn refusal_reason(body: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned))
        .unwrap_or_else(|| String::from_utf8_lossy(body).chars().take(200).collect())
}

/// The aggregator's `{"reason": label}` of a refusal.
fn refusal_label(body: &[u8]) -> Option<String> {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()?
        .get("reason")?
        .as_str()
        .map(str::to_owned)
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
    use axum::http::{HeaderMap, StatusCode};
    use axum::response::IntoResponse;
    use geth_wire::control::{AgentCommand, Command};
    use geth_wire::EventKind;

    /// How the test aggregator signs its replies.
    #[derive(Clone)]
    enum Signing {
        /// With the aggregator key, for the request it answers.
        Honest(PrivateKeySigner),
        /// No signature header.
        Unsigned,
        /// Garbage in the header.
        Malformed,
        /// With a key that is not the aggregator's.
        Foreign(PrivateKeySigner),
        /// With the aggregator key, but bound to another request.
        OtherRequest(PrivateKeySigner),
    }

    /// How the test aggregator answers MAC'd requests (once a signed
    /// exchange opened the session).
    #[derive(Clone, Copy, Debug, PartialEq)]
    enum MacReplies {
        Honest,
        /// Refuses with `no_session` and forgets the session (a restart).
        Forget,
        Unsigned,
        Malformed,
        /// Under another key.
        Foreign,
        /// Under the session key, but for another request.
        OtherRequest,
    }

    #[derive(Clone)]
    struct TestAggregator {
        signing: Signing,
        times: Arc<Mutex<Vec<u64>>>,
        /// How each request was proven: "signature" or "mac".
        proofs: Arc<Mutex<Vec<&'static str>>>,
        session: Arc<Mutex<Option<SessionKey>>>,
        mac_replies: Arc<Mutex<MacReplies>>,
    }

    fn sign_reply(key: &PrivateKeySigner, request_signature: &str, body: &[u8]) -> String {
        let digest = keccak256(reply_signing_payload(request_signature, body));
        let sig = key.sign_hash_sync(&digest).unwrap();
        format!("0x{}", hex::encode(sig.as_bytes()))
    }

    /// The reply to a MAC'd request: (status, reply MAC header, body).
    fn mac_reply(
        state: &TestAggregator,
        time: u64,
        request_mac: &str,
        request_body: &[u8],
        body: Vec<u8>,
    ) -> (StatusCode, Option<String>, Vec<u8>) {
        let no_session = || {
            let refusal = br#"{"error":"no session","reason":"no_session"}"#.to_vec();
            (StatusCode::UNAUTHORIZED, None, refusal)
        };
        let mode = *state.mac_replies.lock().unwrap();
        let mut session = state.session.lock().unwrap();
        let Some(key) = session.clone() else {
            return no_session();
        };
        assert!(
            key.verify_request(time, request_body, request_mac),
            "the agent MACs under the session key"
        );
        let seal = match mode {
            MacReplies::Honest => Some(key.reply_mac(request_mac, &body)),
            MacReplies::Forget => {
                *session = None;
                return no_session();
            }
            MacReplies::Unsigned => None,
            MacReplies::Malformed => Some("0xnot-a-mac".into()),
            MacReplies::Foreign => {
                let other = k256_secret(9);
                Some(SessionKey::derive(&other.0, &other.1).reply_mac(request_mac, &body))
            }
            MacReplies::OtherRequest => Some(key.reply_mac("0xother", &body)),
        };
        (StatusCode::OK, seal, body)
    }

    fn k256_secret(byte: u8) -> (geth_wire::session::NonZeroScalar, PublicKey) {
        let key = PrivateKeySigner::from_bytes(&B256::repeat_byte(byte)).unwrap();
        (
            *key.credential().as_nonzero_scalar(),
            PublicKey::from(key.credential().verifying_key()),
        )
    }

    fn reply(
        state: &TestAggregator,
        headers: &HeaderMap,
        request_body: &[u8],
        body: Vec<u8>,
    ) -> axum::response::Response {
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        let time: u64 = header(HEADER_TIME).parse().unwrap_or(0);
        state.times.lock().unwrap().push(time);
        let request_mac = header(HEADER_MAC);
        if !request_mac.is_empty() {
            state.proofs.lock().unwrap().push("mac");
            let (code, seal, body) = mac_reply(state, time, &request_mac, request_body, body);
            let mut response = (code, body).into_response();
            if let Some(seal) = seal {
                response
                    .headers_mut()
                    .insert(HEADER_REPLY_MAC, seal.parse().unwrap());
            }
            return response;
        }
        state.proofs.lock().unwrap().push("signature");
        let request_signature = header(HEADER_SIGNATURE);
        if let Signing::Honest(key) = &state.signing {
            // Open the session as the aggregator does: from the request's key.
            let signature: Signature = request_signature.parse().unwrap();
            let digest = keccak256(signing_payload(time, request_body));
            let node = signature.recover_from_prehash(&digest).unwrap();
            *state.session.lock().unwrap() = Some(SessionKey::derive(
                key.credential().as_nonzero_scalar(),
                &PublicKey::from(node),
            ));
        }
        let signature = match &state.signing {
            Signing::Honest(key) => Some(sign_reply(key, &request_signature, &body)),
            Signing::Unsigned => None,
            Signing::Malformed => Some("0xnot-a-signature".into()),
            Signing::Foreign(key) => Some(sign_reply(key, &request_signature, &body)),
            Signing::OtherRequest(key) => Some(sign_reply(key, "0xother", &body)),
        };
        let mut response = (StatusCode::OK, body).into_response();
        if let Some(signature) = signature {
            response
                .headers_mut()
                .insert(HEADER_REPLY_SIGNATURE, signature.parse().unwrap());
        }
        response
    }

    async fn serve(signing: Signing) -> (String, TestAggregator) {
        use axum::extract::State;
        let state = TestAggregator {
            signing,
            times: Default::default(),
            proofs: Default::default(),
            session: Default::default(),
            mac_replies: Arc::new(Mutex::new(MacReplies::Honest)),
        };
        let served = state.clone();
        let app = axum::Router::new()
            .route(
                "/api/report",
                axum::routing::post(
                    |State(s): State<TestAggregator>,
                     headers: HeaderMap,
                     request: axum::body::Bytes| async move {
                        // The same restart command in every reply, as the
                        // aggregator re-delivers it until its outcome is stored.
                        let node = headers
                            .get(HEADER_NODE)
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or_default()
                            .to_owned();
                        let body = serde_json::to_vec(&ReportReply {
                            acked: vec![1],
                            reference: Some(BlockRef {
                                number: 5,
                                hash: "0xabcd".into(),
                            }),
                            commands: vec![AgentCommand {
                                id: "restart-1".into(),
                                node,
                                expires_ms: now_ms() + 600_000,
                                command: Command::Restart,
                            }],
                            fleet_head: Some(9),
                        })
                        .unwrap();
                        reply(&s, &headers, &request, body)
                    },
                ),
            )
            .route(
                "/api/peers",
                axum::routing::get(
                    |State(s): State<TestAggregator>, headers: HeaderMap| async move {
                        let body = serde_json::to_vec(&PeerList {
                            enodes: vec!["enode://00@127.0.0.1:1".into()],
                        })
                        .unwrap();
                        reply(&s, &headers, b"", body)
                    },
                ),
            )
            .with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        (format!("http://{addr}"), served)
    }

    struct Harness {
        reporter: Reporter,
        spool: Arc<Spool>,
        metrics: Arc<Metrics>,
        status: watch::Receiver<NodeStatus>,
        /// What reached the supervisor's control path.
        requests: mpsc::Receiver<crate::supervisor::Request>,
        _dir: tempfile::TempDir,
    }

    fn reporter(base: &str, aggregator: Address) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let spool = Arc::new(Spool::open(&dir.path().join("spool")).unwrap());
        let metrics = Arc::new(Metrics::new(None));
        let mut node = NodeStatus::new("n".into(), crate::status::Mode::Spawn, 1);
        node.chain.head = Some(3); // below the reference: no IPC lookup needed
        let (status_tx, status) = watch::channel(node);
        let (_heads_tx, heads) = mpsc::channel(1);
        let key = PrivateKeySigner::random();
        let (requests_tx, requests) = mpsc::channel(16);
        let executor = Arc::new(Executor::new(
            &format!("{:#x}", key.address()),
            crate::commands::Ledger::open(&dir.path().join(crate::commands::FILE)),
            requests_tx,
            spool.clone(),
        ));
        let reporter = Reporter::new(
            base,
            key,
            aggregator,
            status_tx,
            heads,
            spool.clone(),
            metrics.clone(),
            ReadinessConfig::default(),
            dir.path().join("geth.ipc"),
        )
        .with_commands(executor);
        Harness {
            reporter,
            spool,
            metrics,
            status,
            requests,
            _dir: dir,
        }
    }

    #[tokio::test]
    async fn a_reply_signed_by_the_aggregator_for_this_request_is_applied() {
        let key = PrivateKeySigner::random();
        let (base, aggregator) = serve(Signing::Honest(key.clone())).await;
        let times = aggregator.times.clone();
        let mut h = reporter(&base, key.address());
        h.spool
            .push(EventKind::Blocked {
                reason: "test".into(),
            })
            .unwrap();
        assert_eq!(h.spool.depth(), 1);
        h.reporter.flush_spool().await.unwrap();
        assert_eq!(h.spool.depth(), 0, "the ack was applied");
        let status = h.status.borrow().clone();
        assert_eq!(status.reference_head, Some(5));
        assert_eq!(
            status.reference,
            Some(BlockRef {
                number: 5,
                hash: "0xabcd".into()
            })
        );
        assert_eq!(status.hash_at_reference, None, "node below the reference");
        assert_eq!(status.fleet_head, Some(9));
        // Many requests within the same milliseconds: times strictly increase.
        for _ in 0..20 {
            h.reporter.send_stats().await.unwrap();
        }
        let times = times.lock().unwrap().clone();
        assert_eq!(times.len(), 21);
        assert!(times.windows(2).all(|w| w[0] < w[1]), "{times:?}");
        assert!(!h.metrics.encode().contains("replies_rejected_total{"));
        // The command came in all 21 replies and reached the control path once.
        let request = tokio::time::timeout(Duration::from_secs(10), h.requests.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(request.command, Command::Restart);
        let _ = request.reply.send(geth_wire::control::Outcome::Starting);
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(
            h.requests.try_recv().is_err(),
            "a re-delivered command ran again"
        );
    }

    #[tokio::test]
    async fn a_stopping_reporter_first_delivers_what_is_still_spooled() {
        let key = PrivateKeySigner::random();
        let (base, aggregator) = serve(Signing::Honest(key.clone())).await;
        let times = aggregator.times;
        let h = reporter(&base, key.address());
        // Recorded by the supervisor while stopping, before the reporter's stop.
        h.spool
            .push(EventKind::Blocked {
                reason: "test".into(),
            })
            .unwrap();
        let stop = CancellationToken::new();
        stop.cancel();
        h.reporter.run(stop).await;
        assert_eq!(h.spool.depth(), 0, "the event was delivered and acked");
        assert!(!times.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn unsigned_malformed_and_foreign_replies_are_ignored_and_counted() {
        let key = PrivateKeySigner::random();
        let cases = [
            (Signing::Unsigned, "unsigned"),
            (Signing::Malformed, "malformed"),
            (Signing::Foreign(PrivateKeySigner::random()), "foreign"),
            (Signing::OtherRequest(key.clone()), "foreign"),
        ];
        for (signing, reason) in cases {
            let (base, _) = serve(signing).await;
            let mut h = reporter(&base, key.address());
            h.spool
                .push(EventKind::Blocked {
                    reason: "test".into(),
                })
                .unwrap();
            let err = h.reporter.flush_spool().await.unwrap_err();
            h.reporter.on_failure(&err);
            assert!(
                matches!(&err, ReportError::Reply(r) if r.reason() == reason),
                "{reason}: {err}"
            );
            assert_eq!(h.spool.depth(), 1, "{reason}: no ack applied");
            let err = h.reporter.send_stats().await.unwrap_err();
            h.reporter.on_failure(&err);
            assert_eq!(h.status.borrow().reference, None, "{reason}: no reference");
            assert_eq!(h.status.borrow().reference_head, None);
            // The peer list is refused before any enode is looked at.
            let err = h.reporter.discover_peers().await.unwrap_err();
            h.reporter.on_failure(&err);
            assert!(matches!(err, ReportError::Reply(_)), "{reason}: {err}");
            assert!(
                h.reporter.known_peers.is_empty(),
                "{reason}: no peer dialled"
            );
            assert!(
                h.requests.try_recv().is_err(),
                "{reason}: a command of an untrusted reply reached the supervisor"
            );
            let metrics = h.metrics.encode();
            let line =
                format!("clique_agent_aggregator_replies_rejected_total{{reason=\"{reason}\"}} 3");
            assert!(metrics.contains(&line), "{reason}: {metrics}");
            assert!(metrics.contains("clique_agent_report_failures_total 0"));
        }
    }

    #[tokio::test]
    async fn after_one_signed_exchange_requests_are_maced_and_a_lost_session_is_reopened() {
        let key = PrivateKeySigner::random();
        let (base, aggregator) = serve(Signing::Honest(key.clone())).await;
        let mut h = reporter(&base, key.address());
        let proofs = || aggregator.proofs.lock().unwrap().clone();
        for _ in 0..3 {
            h.reporter.send_stats().await.unwrap();
        }
        h.reporter.discover_peers().await.unwrap();
        assert_eq!(proofs(), ["signature", "mac", "mac", "mac"]);

        // The aggregator restarted: refused for want of a session, the same
        // report goes again at once, signed, and is delivered.
        *aggregator.mac_replies.lock().unwrap() = MacReplies::Forget;
        h.reporter.send_stats().await.unwrap();
        assert_eq!(proofs()[4..], ["mac", "signature"]);
        *aggregator.mac_replies.lock().unwrap() = MacReplies::Honest;
        h.reporter.send_stats().await.unwrap();
        assert_eq!(proofs()[6..], ["mac"]);

        // Within a session, a reply must carry the session MAC for its request.
        for (mode, reason) in [
            (MacReplies::Unsigned, "unsigned"),
            (MacReplies::Malformed, "malformed"),
            (MacReplies::Foreign, "foreign"),
            (MacReplies::OtherRequest, "foreign"),
        ] {
            *aggregator.mac_replies.lock().unwrap() = mode;
            let err = h.reporter.send_stats().await.unwrap_err();
            assert!(
                matches!(&err, ReportError::Reply(r) if r.reason() == reason),
                "{mode:?}: {err}"
            );
        }
        assert_eq!(
            h.status.borrow().fleet_head,
            Some(9),
            "from the proven replies only"
        );
        let times = aggregator.times.lock().unwrap().clone();
        assert!(times.windows(2).all(|w| w[0] < w[1]), "{times:?}");
    }

    #[test]
    fn verify_reply_checks_key_request_and_body() {
        let key = PrivateKeySigner::random();
        let good = sign_reply(&key, "0xreq", b"{}");
        assert_eq!(
            verify_reply(key.address(), "0xreq", Some(&good), b"{}"),
            Ok(PublicKey::from(key.credential().verifying_key())),
            "the aggregator's public key, for the session"
        );
        let foreign = Err(ReplyRejected::Foreign);
        assert_eq!(
            verify_reply(key.address(), "0xother", Some(&good), b"{}"),
            foreign
        );
        assert_eq!(
            verify_reply(key.address(), "0xreq", Some(&good), b"{ }"),
            foreign
        );
        let stranger = PrivateKeySigner::random().address();
        assert_eq!(verify_reply(stranger, "0xreq", Some(&good), b"{}"), foreign);
        assert_eq!(
            verify_reply(key.address(), "0xreq", None, b"{}"),
            Err(ReplyRejected::Unsigned)
        );
        for bad in ["", "0x", "zz", &good[2..], &good[..good.len() - 2], "0xgg"] {
            assert_eq!(
                verify_reply(key.address(), "0xreq", Some(bad), b"{}"),
                Err(ReplyRejected::Malformed),
                "{bad}"
            );
        }
    }

    #[test]
    fn request_times_strictly_increase_and_follow_the_clock() {
        let clock = RequestClock::default();
        assert_eq!(clock.next(1000), 1000);
        assert_eq!(clock.next(1000), 1001);
        assert_eq!(
            clock.next(999),
            1002,
            "a clock stepping back does not repeat"
        );
        assert_eq!(clock.next(5000), 5000);
    }

    #[test]
    fn warnings_are_limited_per_kind_and_minute() {
        let mut limiter: KeyedLimiter<String> = KeyedLimiter::new(WARN_EVERY, 64);
        let t0 = std::time::Instant::now();
        assert!(limiter.due("refused 401".into(), t0));
        assert!(!limiter.due("refused 401".into(), t0 + Duration::from_secs(59)));
        assert!(limiter.due("unreachable".into(), t0 + Duration::from_secs(1)));
        assert!(limiter.due("refused 401".into(), t0 + Duration::from_secs(61)));
        let refused = ReportError::Refused {
            status: 401,
            reason: refusal_reason(br#"{"error":"clock skew: 400 s"}"#),
        };
        assert_eq!(refused.kind(), "refused 401");
        assert!(
            refused.to_string().contains("clock skew: 400 s"),
            "{refused}"
        );
        assert_eq!(refusal_reason(b"plain text"), "plain text");
    }

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
