//! The sync gate: `/readyz` is ready only when geth answers, has enough peers,
//! is not syncing, is close to the reference head, holds the fleet's block at
//! the reference height (not a side branch), its head is fresh and was sealed
//! after geth last gained peers, and the gas price floor is applied.
//! `/livez` stays loose: a syncing or blocked node is alive and must not be
//! restarted by the platform.

use serde::{Deserialize, Serialize};

use crate::status::{NodeStatus, Phase};

#[derive(Debug, Clone, Copy)]
pub struct ReadinessConfig {
    pub min_peers: u64,
    /// Largest allowed distance to the reference head (K blocks).
    pub max_lag: u64,
    /// The head may be at most this many block periods old (period > 0).
    pub max_head_age_periods: u64,
    /// geth must have answered within this many milliseconds.
    pub answer_window_ms: u64,
}

impl Default for ReadinessConfig {
    fn default() -> Self {
        Self {
            min_peers: 1,
            max_lag: 2,
            max_head_age_periods: 6,
            answer_window_ms: 3_000,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Condition {
    pub name: String,
    pub ok: bool,
    /// What was observed.
    pub value: String,
    /// What is required.
    pub want: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Readiness {
    pub ready: bool,
    pub conditions: Vec<Condition>,
}

/// Evaluates every condition; `reference_head` is the best head known from
/// outside this node (the aggregator), if any.
pub fn evaluate(
    status: &NodeStatus,
    config: &ReadinessConfig,
    reference_head: Option<u64>,
    now_ms: u64,
) -> Readiness {
    let chain = &status.chain;
    let mut conditions = Vec::new();
    let mut add = |name: &str, ok, value: String, want: String| {
        conditions.push(Condition {
            name: name.to_owned(),
            ok,
            value,
            want,
        });
    };

    add(
        "geth_running",
        status.phase == Phase::Running && status.blocked.is_none(),
        match &status.blocked {
            Some(reason) => format!("blocked: {reason}"),
            None => format!("{:?}", status.phase).to_lowercase(),
        },
        "running".into(),
    );
    let answered_ago = chain.answered_at_ms.map(|t| now_ms.saturating_sub(t));
    add(
        "geth_answers",
        answered_ago.is_some_and(|ago| ago <= config.answer_window_ms),
        answered_ago.map_or("never".into(), |ago| format!("{ago} ms ago")),
        format!("within {} ms", config.answer_window_ms),
    );
    add(
        "peers",
        chain.peers.is_some_and(|p| p >= config.min_peers),
        chain.peers.map_or("unknown".into(), |p| p.to_string()),
        format!(">= {}", config.min_peers),
    );
    add(
        "not_syncing",
        chain.syncing == Some(false),
        chain.syncing.map_or("unknown".into(), |s| {
            if s { "syncing" } else { "not syncing" }.into()
        }),
        "not syncing".into(),
    );
    let reference = reference_head.into_iter().chain(chain.highest_block).max();
    match (chain.head, reference) {
        (Some(head), Some(reference)) => {
            let lag = reference.saturating_sub(head);
            add(
                "head_lag",
                lag <= config.max_lag,
                format!("{lag} blocks behind {reference}"),
                format!("<= {}", config.max_lag),
            );
        }
        (None, _) => add(
            "head_lag",
            false,
            "head unknown".into(),
            format!("<= {}", config.max_lag),
        ),
        (Some(_), None) => add(
            "head_lag",
            true,
            "no reference head".into(),
            format!("<= {}", config.max_lag),
        ),
    }
    let (ok, value, want) = same_chain(status);
    add("same_chain", ok, value, want);
    if status.period > 0 {
        let max_age_s = config.max_head_age_periods * status.period;
        let age_s = chain.head_time.map(|t| (now_ms / 1000).saturating_sub(t));
        add(
            "head_fresh",
            age_s.is_some_and(|age| age <= max_age_s),
            age_s.map_or("unknown".into(), |a| format!("{a} s old")),
            format!("<= {max_age_s} s ({} periods)", config.max_head_age_periods),
        );
        // geth 1.13 tells nothing of its peers' heads outside a sync (and a
        // short one can start and end between two reads): after it gains
        // peers, only a head sealed since then (one period and a second of
        // slack) shows it is not behind them.
        let (ok, value, want) = match (chain.peered_at_ms, chain.head_time) {
            (None, _) => (true, "no peers".into(), "peers decides".into()),
            (Some(peered_at_ms), head_time) => {
                let since_s = (peered_at_ms / 1000).saturating_sub(status.period + 1);
                (
                    head_time.is_some_and(|t| t >= since_s),
                    head_time.map_or("head unknown".into(), |t| format!("head sealed at {t}")),
                    format!("sealed at >= {since_s} (peered at {})", peered_at_ms / 1000),
                )
            }
        };
        add("caught_up", ok, value, want);
    }
    // A node that would drop zero-price transactions does not serve the chain
    // as promised (docs/GAS.md).
    add(
        "gas_price_floor",
        status.gas_price_floor_wei.is_some(),
        status
            .gas_price_floor_wei
            .map_or("not applied".into(), |wei| format!("{wei} wei applied")),
        "applied".into(),
    );
    Readiness {
        ready: conditions.iter().all(|c| c.ok),
        conditions,
    }
}

/// At or above the fleet's reference height, this node's block there must be
/// the fleet's: a node on a side branch is not serving the chain. Below it,
/// `head_lag` decides.
fn same_chain(status: &NodeStatus) -> (bool, String, String) {
    let (Some(reference), Some(head)) = (&status.reference, status.chain.head) else {
        return (
            true,
            "no reference block".into(),
            "the fleet's block".into(),
        );
    };
    let want = format!("{} at {}", reference.hash, reference.number);
    if head < reference.number {
        return (
            true,
            format!("below {} (head {head})", reference.number),
            want,
        );
    }
    // At the reference height the live head is the freshest answer.
    let own = if head == reference.number {
        status.chain.head_hash.as_deref()
    } else {
        status.hash_at_reference.as_deref()
    };
    match own {
        Some(own) => (
            own.eq_ignore_ascii_case(&reference.hash),
            format!("{own} at {}", reference.number),
            want,
        ),
        None => (false, format!("hash at {} unknown", reference.number), want),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::{ChainView, Mode};

    fn healthy(now_ms: u64) -> NodeStatus {
        let mut s = NodeStatus::new("n".into(), Mode::Spawn, 1);
        s.phase = Phase::Running;
        s.chain = ChainView {
            head: Some(100),
            head_hash: Some("0x1".into()),
            head_time: Some(now_ms / 1000 - 1),
            peers: Some(2),
            peered_at_ms: Some(now_ms - 60_000),
            syncing: Some(false),
            highest_block: None,
            answered_at_ms: Some(now_ms - 400),
        };
        s.gas_price_floor_wei = Some(0);
        s
    }

    fn failing(r: &Readiness) -> Vec<&str> {
        r.conditions
            .iter()
            .filter(|c| !c.ok)
            .map(|c| c.name.as_str())
            .collect()
    }

    #[test]
    fn healthy_node_is_ready() {
        let now = 1_800_000_000_000;
        let r = evaluate(&healthy(now), &ReadinessConfig::default(), Some(101), now);
        assert!(r.ready, "{r:?}");
    }

    fn same_chain_of(s: &NodeStatus) -> Condition {
        let now = 1_800_000_000_000;
        let r = evaluate(s, &ReadinessConfig::default(), s.reference_head, now);
        r.conditions
            .into_iter()
            .find(|c| c.name == "same_chain")
            .expect("same_chain is always evaluated")
    }

    fn with_reference(number: u64, hash: &str, own: Option<&str>) -> NodeStatus {
        let mut s = healthy(1_800_000_000_000);
        s.reference_head = Some(number);
        s.reference = Some(geth_wire::BlockRef {
            number,
            hash: hash.into(),
        });
        s.hash_at_reference = own.map(str::to_owned);
        s
    }

    #[test]
    fn same_chain_compares_the_hash_at_the_reference_height() {
        // No aggregator: nothing to compare with.
        let c = same_chain_of(&healthy(1_800_000_000_000));
        assert!(c.ok, "{c:?}");
        // Above the reference on the fleet's chain (hash case does not matter).
        let c = same_chain_of(&with_reference(98, "0xAB", Some("0xab")));
        assert!(
            c.ok && c.value == "0xab at 98" && c.want == "0xAB at 98",
            "{c:?}"
        );
        // Above the reference on a side branch: not ready, both hashes shown.
        let s = with_reference(98, "0xab", Some("0xcd"));
        let c = same_chain_of(&s);
        assert!(
            !c.ok && c.value == "0xcd at 98" && c.want == "0xab at 98",
            "{c:?}"
        );
        let r = evaluate(
            &s,
            &ReadinessConfig::default(),
            s.reference_head,
            1_800_000_000_000,
        );
        assert!(!r.ready);
        assert_eq!(failing(&r), ["same_chain"], "head_lag stays fine");
        // At the reference height the live head hash decides (head_hash is 0x1).
        assert!(same_chain_of(&with_reference(100, "0x1", None)).ok);
        assert!(same_chain_of(&with_reference(100, "0x1", Some("0x2"))).ok);
        let c = same_chain_of(&with_reference(100, "0x2", Some("0x2")));
        assert!(!c.ok && c.value == "0x1 at 100", "{c:?}");
        // Below the reference height head_lag decides.
        let c = same_chain_of(&with_reference(101, "0xab", None));
        assert!(c.ok && c.value.starts_with("below 101"), "{c:?}");
        // Above it with our own hash unknown: not proven, not ready.
        let c = same_chain_of(&with_reference(98, "0xab", None));
        assert!(!c.ok && c.value == "hash at 98 unknown", "{c:?}");
        // Head unknown: head_lag already fails; same_chain has nothing to say.
        let mut s = with_reference(98, "0xab", Some("0xcd"));
        s.chain.head = None;
        assert!(same_chain_of(&s).ok);
    }

    #[test]
    fn each_condition_can_fail_on_its_own() {
        let now = 1_800_000_000_000;
        let config = ReadinessConfig::default();
        type Breaker = fn(&mut NodeStatus);
        let cases: [(&str, Breaker); 8] = [
            ("geth_running", |s| {
                s.blocked = Some("genesis mismatch".into())
            }),
            ("geth_answers", |s| s.chain.answered_at_ms = Some(1)),
            ("peers", |s| s.chain.peers = Some(0)),
            ("not_syncing", |s| s.chain.syncing = Some(true)),
            ("head_lag", |s| s.chain.highest_block = Some(200)),
            // Stale, on peers held since before that block.
            ("head_fresh", |s| {
                s.chain.head_time = Some(1);
                s.chain.peered_at_ms = Some(1_000);
            }),
            // Just peered, on a head sealed 5 s ago (fresh enough).
            ("caught_up", |s| {
                s.chain.peered_at_ms = Some(1_800_000_000_000);
                s.chain.head_time = Some(1_800_000_000 - 5);
            }),
            ("gas_price_floor", |s| s.gas_price_floor_wei = None),
        ];
        for (name, break_it) in cases {
            let mut s = healthy(now);
            break_it(&mut s);
            let r = evaluate(&s, &config, None, now);
            assert_eq!(failing(&r), [name]);
        }
    }

    #[test]
    fn period_zero_has_no_freshness_condition() {
        let now = 1_800_000_000_000;
        let mut s = healthy(now);
        s.period = 0;
        s.chain.head_time = Some(1);
        let r = evaluate(&s, &ReadinessConfig::default(), None, now);
        assert!(r.ready && r.conditions.iter().all(|c| c.name != "head_fresh"));
    }

    #[test]
    fn after_gaining_peers_only_a_head_sealed_since_then_is_caught_up() {
        let now = 1_800_000_000_000;
        let caught_up = |s: &NodeStatus| {
            evaluate(s, &ReadinessConfig::default(), None, now)
                .conditions
                .into_iter()
                .find(|c| c.name == "caught_up")
                .unwrap()
        };
        let mut s = healthy(now);
        // Re-peered now; the head is from 8 s ago (cut off meanwhile).
        s.chain.peered_at_ms = Some(now);
        s.chain.head_time = Some(now / 1000 - 8);
        let c = caught_up(&s);
        assert!(!c.ok, "{c:?}");
        // Within one period and a second of slack.
        s.chain.head_time = Some(now / 1000 - 2);
        assert!(caught_up(&s).ok);
        s.chain.head_time = None;
        assert!(!caught_up(&s).ok);
        // No peers: `peers` decides.
        s.chain.peered_at_ms = None;
        assert!(caught_up(&s).ok);
    }
}
