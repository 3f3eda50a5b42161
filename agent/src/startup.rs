//! What the agent does to a geth that has just started: apply the network's gas
//! price floor (retried until geth takes it; the node is not ready before),
//! and (signers) start sealing once the other signers are peered.
//!
//! Sealing is started over IPC instead of `--mine` because signers that seal
//! before they are peered each seal their own block 1, and the fork costs
//! seconds to resolve.
//!
//! Signers that start together can still wedge (geth drops propagated blocks
//! until it starts mining): `unwedge` watches for that once sealing started.

use std::future::Future;
use std::time::Duration;

use alloy::primitives::{Address, U256};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::rpc::{GethRpc, RpcError};
use crate::status::NodeStatus;

#[derive(Debug, Clone)]
pub struct StartupPolicy {
    pub min_gas_price_wei: u64,
    /// `None` for a node that does not seal.
    pub sealing: Option<SealingStart>,
}

#[derive(Debug, Clone, Copy)]
pub struct SealingStart {
    /// This node's signer address.
    pub signer: Address,
    pub min_peers: usize,
    pub max_wait: Duration,
    /// After an unclean stop, hold sealing up to this long until this node's
    /// head reaches the fleet's highest (from the aggregator); `None`: no hold.
    pub recovery_hold: Option<Duration>,
}

/// Whether a signer that stopped uncleanly may seal now (see
/// docs/OPERATIONS.md, "After a power cut").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecoveryTurn {
    /// The heads are not compared yet (no aggregator reply since this start).
    Unknown,
    /// Another signer holds a longer history: sealing now would seal over it.
    Behind { own: u64, fleet: u64 },
    /// This node holds the fleet's highest head (or has caught up with it).
    Seal { own: u64 },
}

/// How far below the fleet's highest head a signer may be and still seal:
/// the holder of the highest head seals a block or two on its own before
/// clique's signer limit stops it, while the others still hold.
pub const RECOVERY_SLACK: u64 = 2;

pub fn recovery_turn(own: u64, fleet_head: Option<u64>) -> RecoveryTurn {
    match fleet_head {
        None => RecoveryTurn::Unknown,
        Some(fleet) if fleet > own + RECOVERY_SLACK => RecoveryTurn::Behind { own, fleet },
        Some(_) => RecoveryTurn::Seal { own },
    }
}

/// Whether geth's last stop was unclean: the agent's verdict, or geth's own
/// start-up evidence (a power cut also takes the agent down).
pub fn after_unclean_stop(status: &NodeStatus) -> bool {
    status.last_shutdown.as_ref().is_some_and(|v| !v.clean)
        || status
            .last_start
            .as_ref()
            .is_some_and(|e| e.after_unclean_stop || e.blocks_lost > 0 || e.new_unclean_boots > 0)
}

/// How long the signer in turn for block 1 waits before it seals. geth drops
/// the blocks peers propagate until it seals itself, so a block 1 sealed
/// before the other signers started is lost on them: each seals its own and
/// the chain can wedge with every signer "signed recently" on its own branch.
/// Sealed after they started, the in-turn block 1 (difficulty 2) is taken by
/// all of them, whatever out-of-turn block 1 they sealed meanwhile.
const BLOCK_ONE_DELAY: Duration = Duration::from_secs(1);

/// Whether `own` is clique's in-turn signer for block 1: `signers` sorted by
/// address (as `clique_getSigners` returns them), block `n` is in turn for
/// `signers[n % len]`.
pub fn in_turn_for_block_one(signers: &[Address], own: Address) -> bool {
    let mut sorted = signers.to_vec();
    sorted.sort();
    !sorted.is_empty() && sorted[1 % sorted.len()] == own
}

const PEER_POLL: Duration = Duration::from_millis(250);

/// First wait after a failed `miner_setGasPrice`; doubled up to [`GAS_RETRY_MAX`].
const GAS_RETRY_FIRST: Duration = Duration::from_secs(1);
const GAS_RETRY_MAX: Duration = Duration::from_secs(30);

/// Applies the policy. Returns early (Ok) when cancelled.
pub async fn apply(
    rpc: &GethRpc,
    policy: &StartupPolicy,
    cancel: &CancellationToken,
) -> Result<(), RpcError> {
    apply_reporting(rpc, policy, None, cancel).await
}

/// [`apply`], publishing the gas floor into the node status (readiness,
/// metrics, reports). The floor is retried until geth takes it while sealing
/// starts beside it: a signer that cannot set its floor still seals.
pub async fn apply_reporting(
    rpc: &GethRpc,
    policy: &StartupPolicy,
    status: Option<&watch::Sender<NodeStatus>>,
    cancel: &CancellationToken,
) -> Result<(), RpcError> {
    if let Some(status) = status {
        // A new geth: whatever was applied to the last one no longer holds.
        status.send_modify(|s| s.gas_price_floor_wei = None);
    }
    let wei = policy.min_gas_price_wei;
    let gas = async {
        let applied = apply_gas_floor(
            || rpc.set_gas_price(wei),
            wei,
            status,
            GAS_RETRY_FIRST,
            cancel,
        )
        .await;
        if applied {
            match suggested_gas_price(rpc).await {
                Ok(advised) => {
                    tracing::info!(
                        wei,
                        advised,
                        "gas price floor applied; geth advises wallets {advised} wei"
                    );
                    if let Some(status) = status {
                        status.send_modify(|s| s.suggested_gas_price_wei = Some(advised));
                    }
                }
                Err(e) => tracing::warn!(error = %e, "eth_gasPrice"),
            }
        }
    };
    let (_, sealing) = tokio::join!(gas, start_sealing(rpc, policy, status, cancel));
    sealing
}

/// Calls `set` until it succeeds, waiting `first`, then twice as long each
/// time (up to 30 s); every failure is counted in the status. Returns false
/// if cancelled first.
pub async fn apply_gas_floor<F, Fut>(
    mut set: F,
    wei: u64,
    status: Option<&watch::Sender<NodeStatus>>,
    first: Duration,
    cancel: &CancellationToken,
) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), RpcError>>,
{
    let mut delay = first;
    loop {
        match set().await {
            Ok(()) => {
                if let Some(status) = status {
                    status.send_modify(|s| s.gas_price_floor_wei = Some(wei));
                }
                return true;
            }
            Err(e) => {
                if let Some(status) = status {
                    status.send_modify(|s| s.gas_price_set_failures += 1);
                }
                tracing::warn!(error = %e, wei, retry_in = ?delay, "gas price floor not applied; the node is not ready until it is");
            }
        }
        tokio::select! {
            _ = cancel.cancelled() => return false,
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(GAS_RETRY_MAX);
    }
}

/// `eth_gasPrice`: what geth advises wallets, in wei.
pub async fn suggested_gas_price(rpc: &GethRpc) -> Result<u64, RpcError> {
    let price: U256 = rpc.call("eth_gasPrice", ()).await?;
    Ok(u64::try_from(price).unwrap_or(u64::MAX))
}

/// Starts sealing (signers) once the other signers are peered.
async fn start_sealing(
    rpc: &GethRpc,
    policy: &StartupPolicy,
    status: Option<&watch::Sender<NodeStatus>>,
    cancel: &CancellationToken,
) -> Result<(), RpcError> {
    let Some(sealing) = policy.sealing else {
        return Ok(());
    };
    let deadline = Instant::now() + sealing.max_wait;
    loop {
        let peers = rpc.peer_count().await?;
        if peers >= sealing.min_peers as u64 {
            tracing::info!(peers, "peers connected, starting to seal");
            break;
        }
        if Instant::now() >= deadline {
            tracing::warn!(
                peers,
                wanted = sealing.min_peers,
                "starting to seal without all signer peers after {:?}",
                sealing.max_wait
            );
            break;
        }
        tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            _ = tokio::time::sleep(PEER_POLL) => {}
        }
    }
    if let (Some(hold), Some(status)) = (sealing.recovery_hold, status) {
        let own_head = || async { rpc.block_number().await };
        if !hold_after_unclean_stop(own_head, status, hold, cancel).await? {
            return Ok(());
        }
    }
    if !wait_until_signer_unlocked(rpc, cancel).await? {
        return Ok(());
    }
    let head = rpc.block_number().await?;
    if head == 0 {
        let signers: Vec<Address> = rpc.call("clique_getSigners", ()).await?;
        if in_turn_for_block_one(&signers, sealing.signer) {
            tracing::info!(
                "fresh chain: in turn for block 1, sealing after the other signers have started"
            );
            tokio::select! {
                _ = cancel.cancelled() => return Ok(()),
                _ = tokio::time::sleep(BLOCK_ONE_DELAY) => {}
            }
        }
    }
    rpc.start_mining().await?;
    Ok(())
}

/// After an unclean stop of this node's geth, sealing waits until the heads
/// were compared through the aggregator and this node holds the fleet's
/// highest one (it catches up by syncing from the signer that has it), so the
/// longest surviving history is sealed on first instead of being sealed over.
/// Never longer than `hold`: a lone node (aggregator down, peers gone) seals
/// after it. Returns false when cancelled.
pub async fn hold_after_unclean_stop<F, Fut>(
    mut own_head: F,
    status: &watch::Sender<NodeStatus>,
    hold: Duration,
    cancel: &CancellationToken,
) -> Result<bool, RpcError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<u64, RpcError>>,
{
    let started = Instant::now();
    // geth's start-up evidence arrives with its first answers.
    while status.borrow().last_start.is_none() && started.elapsed() < hold {
        tokio::select! {
            _ = cancel.cancelled() => return Ok(false),
            _ = tokio::time::sleep(PEER_POLL) => {}
        }
    }
    if !after_unclean_stop(&status.borrow()) {
        return Ok(true);
    }
    // A head from before the stop compares nothing: wait for a fresh reply.
    status.send_modify(|s| s.fleet_head = None);
    let mut logged = None;
    loop {
        let own = own_head().await?;
        let turn = recovery_turn(own, status.borrow().fleet_head);
        match turn {
            RecoveryTurn::Seal { own } => {
                tracing::info!(
                    head = own,
                    "after an unclean stop: this node holds the fleet's highest head, sealing resumes"
                );
                return Ok(true);
            }
            _ if started.elapsed() >= hold => {
                tracing::warn!(
                    ?turn,
                    "after an unclean stop: sealing resumes after {hold:?} without this node \
                     holding the fleet's highest head"
                );
                return Ok(true);
            }
            RecoveryTurn::Behind { fleet, .. } if logged != Some(fleet) => {
                logged = Some(fleet);
                tracing::warn!(
                    head = own,
                    fleet_head = fleet,
                    "after an unclean stop: holding sealing until this node reaches the \
                     fleet's highest head (another signer kept a longer history)"
                );
            }
            RecoveryTurn::Unknown if logged.is_none() => {
                logged = Some(0);
                tracing::info!(
                    head = own,
                    "after an unclean stop: holding sealing until the heads are compared \
                     through the aggregator"
                );
            }
            _ => {}
        }
        tokio::select! {
            _ = cancel.cancelled() => return Ok(false),
            _ = tokio::time::sleep(PEER_POLL) => {}
        }
    }
}

/// geth opens its IPC before `--unlock` has decrypted the keystore (scrypt:
/// seconds on a loaded machine). A `miner_start` in between fails its first seal
/// with "authentication needed" and an idle clique chain never retries, so a
/// lone signer stays at block 0. Waits until the etherbase can sign; returns
/// false when cancelled.
pub async fn wait_until_signer_unlocked(
    rpc: &GethRpc,
    cancel: &CancellationToken,
) -> Result<bool, RpcError> {
    let etherbase: String = rpc.call("eth_coinbase", ()).await?;
    let started = Instant::now();
    let mut warned = false;
    loop {
        let signed: Result<String, RpcError> = rpc.call("eth_sign", (&etherbase, "0x00")).await;
        if signed.is_ok() {
            return Ok(true);
        }
        if !warned && started.elapsed() > Duration::from_secs(30) {
            warned = true;
            tracing::warn!(%etherbase, "signer account still locked after 30 s; sealing waits for it");
        }
        tokio::select! {
            _ = cancel.cancelled() => return Ok(false),
            _ = tokio::time::sleep(PEER_POLL) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::Mode;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[test]
    fn the_second_signer_by_address_is_in_turn_for_block_one() {
        let a = Address::repeat_byte(1);
        let b = Address::repeat_byte(2);
        let c = Address::repeat_byte(3);
        assert!(in_turn_for_block_one(&[c, a, b], b));
        assert!(!in_turn_for_block_one(&[c, a, b], a));
        assert!(!in_turn_for_block_one(&[c, a, b], c));
        assert!(
            in_turn_for_block_one(&[a], a),
            "a lone signer seals every block"
        );
        assert!(!in_turn_for_block_one(&[], a));
    }

    fn evidence(after_unclean_stop: bool) -> crate::crash::StartEvidence {
        crate::crash::StartEvidence {
            loaded_head: Some(12),
            previous_head: Some(12),
            blocks_lost: 0,
            repaired: false,
            new_unclean_boots: 0,
            after_unclean_stop,
        }
    }

    #[test]
    fn the_highest_head_seals_first() {
        assert_eq!(recovery_turn(12, None), RecoveryTurn::Unknown);
        assert_eq!(
            recovery_turn(12, Some(21)),
            RecoveryTurn::Behind { own: 12, fleet: 21 }
        );
        assert_eq!(
            recovery_turn(18, Some(21)),
            RecoveryTurn::Behind { own: 18, fleet: 21 }
        );
        // The holder sealed a block alone before clique's limit stopped it.
        assert_eq!(recovery_turn(19, Some(21)), RecoveryTurn::Seal { own: 19 });
        assert_eq!(recovery_turn(21, Some(21)), RecoveryTurn::Seal { own: 21 });
        assert_eq!(recovery_turn(22, Some(21)), RecoveryTurn::Seal { own: 22 });
    }

    #[tokio::test]
    async fn after_an_unclean_stop_sealing_waits_for_the_fleets_highest_head() {
        let mut node = NodeStatus::new("n".into(), Mode::Spawn, 1);
        node.last_start = Some(evidence(true));
        node.fleet_head = Some(99); // from before the stop: not trusted
        let (status, _rx) = watch::channel(node);
        let own = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(12));
        let (status_ref, own_ref) = (status.clone(), own.clone());
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            status_ref.send_modify(|s| s.fleet_head = Some(21));
            tokio::time::sleep(Duration::from_millis(700)).await;
            own_ref.store(21, Ordering::SeqCst);
        });
        let started = Instant::now();
        let own_head = || {
            let own = own.clone();
            async move { Ok(own.load(Ordering::SeqCst)) }
        };
        let go = hold_after_unclean_stop(
            own_head,
            &status,
            Duration::from_secs(60),
            &CancellationToken::new(),
        )
        .await
        .unwrap();
        assert!(go);
        assert!(
            started.elapsed() >= Duration::from_millis(1000),
            "held until the head caught up: {:?}",
            started.elapsed()
        );
        assert!(started.elapsed() < Duration::from_secs(30));
    }

    #[tokio::test]
    async fn a_lone_node_seals_after_the_hold_and_a_clean_one_at_once() {
        let mut node = NodeStatus::new("n".into(), Mode::Spawn, 1);
        node.last_start = Some(evidence(true));
        let (status, _rx) = watch::channel(node);
        let own_head = || async { Ok(12) };
        let started = Instant::now();
        let hold = Duration::from_millis(1200);
        let cancel = CancellationToken::new();
        assert!(hold_after_unclean_stop(own_head, &status, hold, &cancel)
            .await
            .unwrap());
        assert!(
            started.elapsed() >= hold,
            "no aggregator: held the whole time"
        );
        // A clean stop holds nothing.
        status.send_modify(|s| s.last_start = Some(evidence(false)));
        let started = Instant::now();
        assert!(
            hold_after_unclean_stop(own_head, &status, Duration::from_secs(60), &cancel)
                .await
                .unwrap()
        );
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[tokio::test]
    async fn a_failed_gas_floor_is_retried_with_backoff_and_counted() {
        let (status, rx) = watch::channel(NodeStatus::new("n".into(), Mode::Spawn, 1));
        let calls = AtomicU32::new(0);
        let started = Instant::now();
        let applied = apply_gas_floor(
            || {
                let n = calls.fetch_add(1, Ordering::SeqCst);
                async move {
                    if n < 3 {
                        Err(RpcError::Call {
                            method: "miner_setGasPrice",
                            reason: "no".into(),
                        })
                    } else {
                        Ok(())
                    }
                }
            },
            7,
            Some(&status),
            Duration::from_millis(10),
            &CancellationToken::new(),
        )
        .await;
        assert!(applied);
        assert_eq!(calls.load(Ordering::SeqCst), 4);
        // Waited 10 + 20 + 40 ms between the attempts.
        assert!(started.elapsed() >= Duration::from_millis(70));
        let s = rx.borrow();
        assert_eq!(s.gas_price_floor_wei, Some(7));
        assert_eq!(s.gas_price_set_failures, 3);
    }

    #[tokio::test]
    async fn a_cancelled_gas_floor_stays_unapplied() {
        let (status, rx) = watch::channel(NodeStatus::new("n".into(), Mode::Spawn, 1));
        let cancel = CancellationToken::new();
        cancel.cancel();
        let applied = apply_gas_floor(
            || async {
                Err(RpcError::Call {
                    method: "miner_setGasPrice",
                    reason: "no".into(),
                })
            },
            0,
            Some(&status),
            Duration::from_secs(1),
            &cancel,
        )
        .await;
        assert!(!applied);
        assert_eq!(rx.borrow().gas_price_floor_wei, None);
    }
}
